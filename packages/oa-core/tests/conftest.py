import pytest

from oa_core.plugins import PluginManager


@pytest.fixture
def make_manager():
    """A plugin manager with only core built-ins (no entry points) plus the given test plugins."""

    def make(*plugins, entry_points=False):
        pm = PluginManager(entry_points=entry_points)
        for i, plugin in enumerate(plugins):
            pm.register(plugin, getattr(plugin, "name", f"test{i}"))
        return pm

    return make
