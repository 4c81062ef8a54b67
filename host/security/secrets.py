"""Secret config values at rest: the host key (an environment variable or a 0600 key file),
``enc:v1:`` values sealed with it, and passphrase-derived keys for moving an export to another
machine. Errors name the variable or file, never a key or a value."""

from __future__ import annotations

import base64
import binascii
import json
import os
import stat
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ..config import HostConfig, SecurityConfig
from ..errors import InvalidConfig, SecretsError
from .private_files import not_private, os_failure, write_private

PREFIX = "enc:v1:"
EXPORT_FORMAT = "plugin-host-config/1"
# scrypt cost of a passphrase-encrypted export (about 100 ms and 32 MiB here)
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1


def is_sealed(value: Any) -> bool:
    """``value`` is a secret as stored: ``enc:v1:<fernet token>``."""
    return isinstance(value, str) and value.startswith(PREFIX)


def to_seal(key: str, value: Any, secret: Collection[str]) -> bool:
    """Whether field ``key`` holding ``value`` must be sealed before it is stored: a secret
    field, set, and not sealed yet."""
    return key in secret and value is not None and not is_sealed(value)


def _fernets(text: str, *, source: str) -> MultiFernet:
    """The keys in ``text`` (separated by commas or whitespace; the first encrypts)."""
    keys = text.replace(",", " ").split()
    if not keys:
        raise SecretsError(f"{source} holds no key: put the host's key back (from a backup, or a host sharing "
                           "its config store)")
    try:
        return MultiFernet([Fernet(k.encode()) for k in keys])
    except (ValueError, binascii.Error, UnicodeEncodeError):
        raise SecretsError(f"{source}: not a Fernet key (urlsafe base64 of 32 bytes); "
                            "make one with `python -c 'from cryptography.fernet import Fernet; "
                            "print(Fernet.generate_key().decode())'`") from None


def key_file_path(config: HostConfig) -> Path:
    """``security.secret_key_file``: absolute, or relative to the state directory."""
    path = Path(config.security.secret_key_file).expanduser()
    return path if path.is_absolute() else config.state_path / path


def _create_key_file(path: Path) -> None:
    """Write a fresh key to ``path`` unless it exists; two hosts starting at once agree on one
    key (the second keeps the first one's). A failure (a full disk) leaves no key file and is a
    StateError naming it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_private(path, Fernet.generate_key() + b"\n", exclusive=True)
    except OSError as exc:
        raise os_failure(path, exc, "create the secret key file") from None


SETTING = "security.secret_key_file"
_TRUSTED = (0,)  # owners besides the host's user whose links and directories may lead to the key (root)


def _trusted(st: os.stat_result, *, own_group: bool = False) -> bool:
    """A link or directory on the way to the key only root or the host's user can change: theirs,
    and (a directory) not writable by group or others unless sticky (others cannot replace what
    they do not own there). A link's own mode means nothing (always 0777). ``own_group``: a
    directory of the host's user and group may be group-writable (a home 0775 of its own group)."""
    if st.st_uid not in (*_TRUSTED, os.getuid()):
        return False
    writable = 0o002 if own_group and (st.st_uid, st.st_gid) == (os.getuid(), os.getgid()) else 0o022
    return stat.S_ISLNK(st.st_mode) or not st.st_mode & writable or bool(st.st_mode & stat.S_ISVTX)


def _follow(path: Path) -> Path:
    """``path`` with its symlinks followed (a Kubernetes secret volume: ``key -> ..data/key``,
    ``..data -> ..2024_01_01...``) when each link, and the directory each one is in, is root's or
    the host's user's and not writable by others; else SecretsError naming the one that is not."""
    for _ in range(40):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return path
        if not stat.S_ISLNK(st.st_mode):
            return path
        for what, where in (("symlink", path), ("directory", path.parent)):
            if not _trusted(os.lstat(where) if what == "symlink" else os.stat(where)):
                raise SecretsError(f"{SETTING} {path}: the {what} {where} on the way to the key may be changed by "
                                   "a user other than root and the host's: a link to the key is followed only "
                                   "through links and directories of theirs that others cannot write")
        path = path.parent / os.readlink(path)
    raise SecretsError(f"{SETTING} {path}: too many levels of symbolic links")


def _check_directories(path: Path) -> None:
    """Every directory above the key file (its links followed) is root's or the host's user's
    and not writable by others unless sticky: else another user could rename the key's directory
    away and put one holding a key of theirs in its place, and the host would seal new secrets
    with it (SecretsError naming the directory)."""
    for where in Path(os.path.abspath(path)).parents:
        try:
            st = os.stat(where)
        except OSError:  # not there (yet): nothing of it to trust or distrust
            continue
        if not _trusted(st, own_group=True):
            raise SecretsError(f"{SETTING} {path}: the directory {where} on the way to the key may be changed by a "
                               "user other than root and the host's (it is theirs, or others may write in it and it "
                               f"is not sticky): keep the key where only they can change the path (chmod o-w {where})")


def _read_key_file(path: Path, *, create: bool = True) -> MultiFernet:
    real = _follow(path)  # the links on the way checked, then every directory above the key
    _check_directories(real)
    if not path.exists():
        if not create:
            raise SecretsError(f"the secret key file {path} is missing, and values stored in the config store "
                               "(config.json, or the [state] database) are encrypted with it: restore it from a "
                               "backup or copy it from a host sharing the database (or give the key in the "
                               "variable security.secret_key_env names); a new key could not open them")
        _create_key_file(path)
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise SecretsError(f"secret key file {path}: cannot be read ({exc.strerror}; {SETTING})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # checked before reading: a directory, a fifo
            raise SecretsError(f"{SETTING} {path}: not a regular file: point it at the key file")
        # root's and readable by the host's group only is fine too (a secret volume with fsGroup and mode 0440)
        group_read = st.st_uid == 0 != os.getuid() and not st.st_mode & 0o026
        if not group_read and (why := not_private(st, deny=0o077, fix=f"chmod 600 {path}")):
            mounted = " (a Kubernetes secret volume: set its defaultMode to 0400, or 0440 with fsGroup)" \
                if path.is_symlink() else ""
            raise SecretsError(f"secret key file {path}: {why}{mounted} ({SETTING})")
        text = os.read(fd, 64 * 1024).decode("ascii", errors="replace")
    finally:
        os.close(fd)
    return _fernets(text, source=f"secret key file {path} ({SETTING})")


class Cipher:
    """Seals and opens values with one key; ``mismatch`` is what a wrong key is reported as."""

    def __init__(self, fernet: Fernet | MultiFernet | None, mismatch: str) -> None:
        self._fernet = fernet
        self._mismatch = mismatch

    def _key(self) -> Fernet | MultiFernet:
        assert self._fernet is not None
        return self._fernet

    def seal(self, value: Any) -> str:
        """``enc:v1:`` + a Fernet token of ``value`` as JSON (so any JSON type can be secret)."""
        return PREFIX + self._key().encrypt(json.dumps(value).encode()).decode("ascii")

    def open(self, value: str, *, what: str, plugin: str | None = None) -> Any:
        """The value ``seal`` sealed; SecretsError when the key does not match."""
        key = self._key()
        try:
            return json.loads(key.decrypt(value[len(PREFIX):].encode("ascii")))
        except (InvalidToken, UnicodeEncodeError, ValueError):
            raise SecretsError(f"{what}: {self._mismatch}", plugin=plugin) from None

    def reveal(self, values: Mapping[str, Any], *, plugin: str | None = None) -> dict[str, Any]:
        """``values`` with every sealed value decrypted (others as they are)."""
        return {k: self.open(v, what=f"config.{k}", plugin=plugin) if is_sealed(v) else v
                for k, v in values.items()}

    def seal_fields(self, values: Mapping[str, Any], secret: Collection[str]) -> dict[str, Any]:
        """``values`` with the fields named in ``secret`` sealed (already sealed ones kept)."""
        return {k: self.seal(v) if to_seal(k, v, secret) else v for k, v in values.items()}


class SecretBox(Cipher):
    """The host key, loaded on first use: from the environment variable
    ``security.secret_key_env`` when set (several keys separated by commas rotate: the first
    encrypts, all decrypt), else from ``security.secret_key_file``."""

    def __init__(self, config: HostConfig, env: Mapping[str, str] | None = None) -> None:
        self._config = config
        self._env = os.environ if env is None else env
        # Whether sealed values exist (the config store says): then a missing key file is an
        # error, never a reason to make a new key.
        self.sealed_exist: Callable[[], bool] = lambda: False
        self._file: tuple[int, int] | None = None  # the key file read: (inode, mtime)
        super().__init__(None, f"the secret key ({self.source}) does not match the key it was encrypted "
                         "with; restore that key (or list it after the new one, comma-separated, to rotate)")

    def _env_var(self) -> str | None:
        """``security.secret_key_env`` when it is set to something, else None."""
        var = self._config.security.secret_key_env
        return var if var and self._env.get(var) else None

    @property
    def source(self) -> str:
        """Where the key comes from, for messages: ``$VAR`` or the key file's path."""
        var = self._env_var()
        return f"${var}" if var else str(key_file_path(self._config))

    def _key(self) -> Fernet | MultiFernet:
        if self._fernet is None:
            var = self._env_var()
            if var:
                self._fernet = _fernets(self._env[var], source=f"${var} (security.secret_key_env)")
            else:
                path = key_file_path(self._config)
                named = self._config.security.secret_key_env
                if named and named != SecurityConfig().secret_key_env and not os.path.lexists(path):
                    # the operator named a variable of their own: its absence (a unit's Environment
                    # line lost) made a key file nobody else has, and sealed new secrets with it
                    raise SecretsError(f"security.secret_key_env names ${named}, which is not set in the host's "
                                       f"environment, and no key file is at {path}: set ${named} (or leave "
                                       "secret_key_env out to keep the key in security.secret_key_file)")
                if not path.parent.is_dir() and not path.parent.is_relative_to(self._config.state_path):
                    # helper-111: a typo made the directory and the only key there, where no backup looks
                    raise SecretsError(f"{SETTING}: {path}'s directory {path.parent} does not exist: make it (or fix "
                                       "the path); only a key file in the state directory is made with its directory")
                self._fernet = _read_key_file(path, create=not self.sealed_exist())
                st = os.stat(path)
                self._file = (st.st_ino, st.st_mtime_ns)
        return self._fernet

    def _reread(self, path: Path, key: Fernet | MultiFernet) -> Fernet | MultiFernet:
        """The key file changed (put back from a backup, a secret volume updated): read again, and
        used from now on when it still holds every key in use (the same key, or a rotation listing
        the old one after the new), else SecretsError."""
        st = os.stat(path)
        new = _read_key_file(path, create=False)
        try:  # what the key in use sealed, the new file opens
            new.decrypt(key.encrypt(b"check"))
        except InvalidToken:
            raise SecretsError(f"the secret key file {path} changed while the host runs and no longer holds the "
                               "key the stored secrets were encrypted with: put that key back (or list it after "
                               "the new one, comma-separated, to rotate), or restart the host with it")
        self._fernet, self._file = new, (st.st_ino, st.st_mtime_ns)
        return new

    def seal(self, value: Any) -> str:
        """As Cipher.seal, after checking the key file is still the one the key came from: a
        value sealed with a key that exists only in memory could never be opened again."""
        key = self._key()
        if self._file is not None:
            path = key_file_path(self._config)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                raise SecretsError(f"the secret key file {path} was removed while the host runs: restore it "
                                   "(every stored secret needs it) before storing a new secret") from None
            if (st.st_ino, st.st_mtime_ns) != self._file:
                key = self._reread(path, key)
        return PREFIX + key.encrypt(json.dumps(value).encode()).decode("ascii")


def _passphrase_cipher(passphrase: str, salt: bytes, n: int, r: int, p: int) -> Cipher:
    """A key scrypt derives from ``passphrase`` and ``salt`` (slow on purpose)."""
    if not passphrase:
        raise InvalidConfig("the passphrase is empty")
    raw = Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())
    return Cipher(Fernet(base64.urlsafe_b64encode(raw)),
                  "the passphrase does not match the one the export was made with")


def export_cipher(box: SecretBox, passphrase: str | None) -> tuple[Cipher, dict[str, Any]]:
    """The cipher that seals an export's secrets and the document's ``encryption`` header: the
    host key, or a key derived from ``passphrase`` with a fresh random salt. The header's
    ``check`` lets an import tell a wrong key even when the export holds no secret."""
    if passphrase is None:
        cipher: Cipher = box
        header: dict[str, Any] = {"key": "host"}
    else:
        salt = os.urandom(16)
        cipher = _passphrase_cipher(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
        header = {"key": "passphrase", "kdf": "scrypt", "salt": base64.urlsafe_b64encode(salt).decode("ascii"),
                  "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P}
    header["check"] = cipher.seal(EXPORT_FORMAT)
    return cipher, header


def import_cipher(box: SecretBox, header: Any, passphrase: str | None) -> Cipher:
    """The cipher that opens the secrets of an export with ``header`` (its ``encryption``);
    SecretsError if the passphrase or host key is not the one it was made with."""
    if header is None and passphrase is None:
        return box  # written by hand: any encrypted value in it is under the host key
    if not isinstance(header, dict) or header.get("key") not in ("host", "passphrase") \
            or not is_sealed(header.get("check")):
        raise InvalidConfig("the export's encryption header is missing or unknown")
    if header["key"] == "host":
        if passphrase is not None:
            raise InvalidConfig("the export is encrypted with a host key, not a passphrase")
        cipher: Cipher = box
    else:
        if passphrase is None:
            raise SecretsError("the export is encrypted with a passphrase; give it to import")
        n, r, p = header.get("n"), header.get("r"), header.get("p")
        if header.get("kdf") != "scrypt" or not all(type(x) is int for x in (n, r, p)) \
                or not (n >= 2 and r >= 1 and 128 * n * r <= 2**28 and 1 <= p <= 4):  # type: ignore[operator]
            raise InvalidConfig("the export's key derivation is unknown or out of bounds")
        try:
            salt = base64.urlsafe_b64decode(str(header.get("salt")).encode("ascii"))
            cipher = _passphrase_cipher(passphrase, salt, n, r, p)  # type: ignore[arg-type]
        except (ValueError, binascii.Error, UnicodeEncodeError):
            raise InvalidConfig("the export's key derivation parameters are invalid") from None
    if cipher.open(header["check"], what="the export") != EXPORT_FORMAT:
        raise SecretsError("the export's check value is wrong: it was not made by this format")
    return cipher


__all__ = ["EXPORT_FORMAT", "PREFIX", "Cipher", "SecretBox", "export_cipher", "import_cipher", "is_sealed",
           "key_file_path"]
