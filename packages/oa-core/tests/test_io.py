import os

import pytest

from oa_core.io import atomic_dir, atomic_path, follow_umask, umask, usual_mode


@pytest.fixture
def set_umask():
    """``set_umask(mask)`` for the test; the old umask is restored after it."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


def mode(path) -> int:
    return os.lstat(path).st_mode & 0o777


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077], ids=oct)
def test_umask_is_read_without_changing_it(set_umask, mask):
    set_umask(mask)
    assert umask() == mask and umask() == mask
    assert usual_mode() == 0o666 & ~mask and usual_mode(folder=True) == 0o777 & ~mask


@pytest.mark.parametrize("mask", [0o022, 0o002], ids=oct)
def test_follow_umask_gives_what_a_plain_open_gets(tmp_path, set_umask, mask):
    set_umask(mask)
    with open(tmp_path / "plain", "w"):
        pass
    top = tmp_path / "top"
    (top / "sub").mkdir(parents=True)
    for name, m in (("private", 0o600), ("sub/private", 0o600), ("script", 0o700), ("open", 0o666)):
        (top / name).write_text("x")
        (top / name).chmod(m)
    (top / "sub").chmod(0o700)
    top.chmod(0o700)
    outside = tmp_path / "outside"
    outside.write_text("x")
    outside.chmod(0o600)
    (top / "link").symlink_to(outside)
    follow_umask(top)
    plain = mode(tmp_path / "plain")
    assert plain == 0o666 & ~mask
    assert {name: mode(top / name) for name in ("private", "sub/private", "open")} == dict.fromkeys(
        ("private", "sub/private", "open"), plain)
    assert mode(top / "script") == mode(top / "sub") == mode(top) == 0o777 & ~mask
    assert mode(outside) == 0o600  # a link's target is not ours to change


def test_atomic_path_for_writers_that_make_private_files(tmp_path, set_umask):
    set_umask(0o002)
    target = tmp_path / "out" / "weights.bin"
    with atomic_path(target, suffix=".bin") as tmp:
        assert tmp.parent == target.parent and tmp.name.endswith(".bin")
        tmp.unlink()  # a writer that replaces the file with a private one of its own
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY, 0o600)
        os.write(fd, b"data")
        os.close(fd)
    assert target.read_bytes() == b"data" and mode(target) == 0o664
    assert os.listdir(target.parent) == ["weights.bin"]
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError
    assert target.read_bytes() == b"data" and os.listdir(target.parent) == ["weights.bin"]


def test_atomic_dir_contents_follow_the_umask(tmp_path, set_umask):
    set_umask(0o002)
    with atomic_dir(tmp_path / "model") as tmp:
        (tmp / "model.safetensors").write_bytes(b"x")
        (tmp / "model.safetensors").chmod(0o600)  # what safetensors does
    assert mode(tmp_path / "model") == 0o775 and mode(tmp_path / "model" / "model.safetensors") == 0o664
