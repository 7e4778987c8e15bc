"""Plugin manager: loads built-ins and entry-point plugins, collects what they register.

Each ``register_*`` implementation is called on its own with a ``register`` callable bound to its
plugin, so every entry knows its provider, duplicates name both providers, and one broken plugin is
recorded as a failure instead of breaking unrelated commands. A hook implementation whose name matches no
hook spec (a misspelt hook) is a failure too, with the closest hook name.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from typing import Any

import pluggy

from oa_core import hookspecs
from oa_core.errors import OAError, PluginError
from oa_core.extensions import TYPES
from oa_core.hookspecs import KINDS

ENTRY_POINT_GROUP = "oa"
DISABLE_ENV = "OA_DISABLE_PLUGINS"


@dataclass(frozen=True)
class Provider:
    plugin: str
    distribution: str
    version: str


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    obj: Any
    provider: Provider
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Failure:
    plugin: str
    distribution: str
    where: str
    error: str

    def __str__(self) -> str:
        return f"plugin '{self.plugin}' ({self.distribution}) failed in {self.where}: {self.error}"


class Registry:
    """Everything the loaded plugins registered, by kind and name."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS.values()}
        self.duplicates: dict[tuple[str, str], list[Provider]] = {}
        self.failures: list[Failure] = []
        self.config_checks: list[tuple[Provider, Any]] = []  # check_config implementations
        self.providers: list[Provider] = []  # every loaded plugin, also those that register nothing

    def check_config(self, config: Any) -> list[tuple[str, str]]:
        """``(key.path, message)`` problems from every ``check_config`` implementation; one that raises
        is reported as a problem naming its plugin."""
        problems: list[tuple[str, str]] = []
        for provider, check in self.config_checks:
            try:
                problems.extend((str(key), str(msg)) for key, msg in check(config) or ())
            except Exception as e:
                problems.append(("<plugins>", f"plugin '{provider.plugin}' ({provider.distribution}) failed in "
                                              f"check_config: {_one_line(e)}"))
        return problems

    def add(self, entry: Entry) -> None:
        known = self._entries[entry.kind].get(entry.name)
        if known is None:
            self._entries[entry.kind][entry.name] = entry
            return
        providers = self.duplicates.setdefault((entry.kind, entry.name), [known.provider])
        providers.append(entry.provider)

    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[kind])

    def entries(self, kind: str | None = None) -> list[Entry]:
        kinds = [kind] if kind else list(self._entries)
        return [e for k in kinds for _, e in sorted(self._entries[k].items())]

    def entry(self, kind: str, name: str) -> Entry:
        """The entry for ``name``; a clear error when unknown or registered by two plugins."""
        if (kind, name) in self.duplicates:
            who = " and ".join(f"'{p.plugin}' ({p.distribution})" for p in self.duplicates[(kind, name)])
            raise PluginError(
                f"{kind.replace('_', ' ')} '{name}' is registered by both {who}",
                hint=f"uninstall one, or disable one with {DISABLE_ENV}=<plugin>",
            )
        try:
            return self._entries[kind][name]
        except KeyError:
            from oa_core.packages import missing_package

            message = missing_package(kind, name) or unknown_name_message(kind.replace("_", " "), name, self.names(kind))
            raise OAError(message) from None

    def get(self, kind: str, name: str) -> Any:
        return self.entry(kind, name).obj


def unknown_name_message(what: str, name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f"unknown {what} '{name}' (did you mean '{close[0]}'?)"
    return f"unknown {what} '{name}' (available: {', '.join(known) or 'none'})"


class PluginManager:
    """Loads plugins (built-ins, entry points, explicitly registered) and builds a :class:`Registry`."""

    def __init__(self, entry_points: bool = True):
        self.pm = pluggy.PluginManager("oa")
        self.pm.add_hookspecs(hookspecs)
        self.providers: dict[str, Provider] = {}
        self.load_failures: list[Failure] = []  # imports that failed, hooks that match no spec
        self._disabled = {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}
        from oa_core import __version__, builtins

        self.register(builtins, "core", Provider("core", "oa-core", __version__))
        if entry_points:
            self.load_entry_points()

    def register(self, plugin: Any, name: str, provider: Provider | None = None) -> None:
        if name in self._disabled:
            return
        if name in self.providers:
            raise PluginError(f"two plugins are named '{name}'", hint=f"disable one with {DISABLE_ENV}")
        self.pm.register(plugin, name=name)
        self.providers[name] = provider = provider or Provider(name, getattr(plugin, "__name__", name), "")
        self.load_failures.extend(self._unknown_hooks(plugin, provider))

    def _unknown_hooks(self, plugin: Any, provider: Provider) -> list[Failure]:
        """A failure for each hook implementation of ``plugin`` whose name matches no hook spec (pluggy's
        ``check_pending``, per plugin): oa would never call it, e.g. ``register_reward_function``."""
        specs = [name for name, caller in vars(self.pm.hook).items() if not name.startswith("_") and caller.has_spec()]
        failures = []
        for caller in self.pm.get_hookcallers(plugin) or ():
            if caller.has_spec() or all(impl.optionalhook for impl in caller.get_hookimpls() if impl.plugin is plugin):
                continue
            close = difflib.get_close_matches(caller.name, specs, n=1)
            hint = f"did you mean '{close[0]}'?" if close else "the hooks are listed in oa_core.hookspecs"
            failures.append(Failure(provider.plugin, provider.distribution, caller.name,
                                    f"no hook has this name, so oa never calls it ({hint})"))
        return failures

    def unregister(self, name: str) -> None:
        """Remove the plugin registered as ``name`` (a later :meth:`registry` no longer has its entries)."""
        self.pm.unregister(name=name)
        del self.providers[name]
        self.load_failures = [f for f in self.load_failures if f.plugin != name]

    @property
    def disabled(self) -> list[str]:
        """The plugin names switched off with ``OA_DISABLE_PLUGINS``."""
        return sorted(self._disabled)

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        for ep in metadata.entry_points(group=group):
            dist = ep.dist.name if ep.dist else "?"
            version = ep.dist.version if ep.dist else ""
            if ep.name in self._disabled:
                continue
            try:
                self.register(ep.load(), ep.name, Provider(ep.name, dist, version))
            except Exception as e:  # a broken third-party plugin must not break other commands
                self.load_failures.append(Failure(ep.name, dist, f"import of '{ep.value}'", _one_line(e)))

    def hook_impls(self, hook_name: str):
        """The implementations of one hook, with the :class:`Provider` of each."""
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            yield impl, self.providers[impl.plugin_name]

    def registry(self) -> Registry:
        reg = Registry()
        reg.failures.extend(self.load_failures)
        for hook_name, kind in KINDS.items():
            for impl, provider in self.hook_impls(hook_name):

                def register(name: str, obj: Any, _kind=kind, _provider=provider, _hook=hook_name, **info) -> None:
                    wrong = _type_problem(_kind, name, obj)
                    if wrong:  # this entry is left out; the plugin's other entries still register
                        reg.failures.append(Failure(_provider.plugin, _provider.distribution, _hook, wrong))
                    else:
                        reg.add(Entry(_kind, name, obj, _provider, info))

                try:
                    impl.function(*[register for _ in impl.argnames])
                except Exception as e:
                    reg.failures.append(Failure(provider.plugin, provider.distribution, hook_name, _one_line(e)))
        reg.config_checks = [(provider, impl.function) for impl, provider in self.hook_impls("check_config")]
        reg.providers = list(self.providers.values())
        return reg


def _type_problem(kind: str, name: str, obj: Any) -> str | None:
    """Why ``obj`` cannot be registered as ``kind`` (None if it can)."""
    from pydantic import BaseModel

    if kind == "config_section":
        ok, want = isinstance(obj, type) and issubclass(obj, BaseModel), "a pydantic model class"
    else:
        ok, want = isinstance(obj, TYPES[kind]), f"an oa_core.extensions.{TYPES[kind].__name__}"
    return None if ok else f"{kind.replace('_', ' ')} '{name}' must be {want}, not {type(obj).__name__}"


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return f"{type(e).__name__}: {text}"


@lru_cache(maxsize=1)
def get_plugin_manager() -> PluginManager:
    return PluginManager()


@lru_cache(maxsize=1)
def get_registry() -> Registry:
    return get_plugin_manager().registry()


def add_plugin(plugin: Any, name: str, provider: Provider | None = None) -> None:
    """Register a plugin object in this process (notebooks, tests, embedding apps): its hooks count from the
    next :func:`get_registry` on, as if it were installed with an entry point."""
    get_plugin_manager().register(plugin, name, provider)
    get_registry.cache_clear()


def remove_plugin(name: str) -> None:
    """Undo :func:`add_plugin`."""
    get_plugin_manager().unregister(name)
    get_registry.cache_clear()
