"""A bytecode cache for the modules Ansible sends to the lab's hosts, for the test suite only.

Ansible ships each module as a zip (AnsiballZ) that Python imports without writing bytecode, so every
module call on a host compiles ``ansible.module_utils.basic`` and the collection's module_utils again:
0.33 CPU-s a call, half of it compiling. The lab's hosts share the controller's two cores, so with
``PUBIP_LAB_PYC_CACHE=DIR`` in the environment of ``pubip lab up`` (the test suite's conftest sets it) the
lab's sshd puts this directory on its sessions' PYTHONPATH, and zip imports keep their code objects in DIR,
keyed by the source's hash. Without it (``make demo``, the benchmarks, chaos) hosts run modules as a plain
node does. A traceback may name an earlier run's payload path; nothing else differs.
"""

import os
import zipimport

_DIR = os.environ.get("PUBIP_PYC_CACHE") or ""
_compile_source = getattr(zipimport, "_compile_source", None)


def _cached_compile(pathname: str, source: bytes) -> object:
    import hashlib
    import marshal
    import sys

    path = os.path.join(_DIR, f"{hashlib.sha1(source).hexdigest()}-{sys.implementation.cache_tag}.pyc")
    try:
        with open(path, "rb") as f:
            return marshal.loads(f.read())
    except (OSError, EOFError, ValueError, TypeError):
        pass
    code = _compile_source(pathname, source)  # type: ignore[misc]
    try:
        tmp = f"{path}.{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(marshal.dumps(code))
        os.replace(tmp, path)
    except OSError:
        pass
    return code


if _DIR and _compile_source is not None and os.path.isdir(_DIR):
    zipimport._compile_source = _cached_compile  # type: ignore[attr-defined]
