"""One Java process per simulator library, shared by every environment object of the process.

ScienceWorld and TextWorldExpress are Java simulators driven over py4j. Their own Python classes
start a JVM per environment object (1-3 GB and a second or more each for ScienceWorld), so a batch
of sixteen episodes would start sixteen JVMs. Here each library gets one gateway, started on first
use and shut down at exit; every environment object makes its own game instance inside it.
"""

from __future__ import annotations

import atexit
import shutil
import threading
from typing import Any

from atlas_hf.errors import InvalidInputError

_GATEWAYS: dict[str, Any] = {}
_LOCK = threading.Lock()


class JavaNotFoundError(InvalidInputError, FileNotFoundError):
    """The `java` command that the ScienceWorld and TextWorldExpress simulators need is not installed."""


def require_java() -> str:
    """The path of `java`, or a `JavaNotFoundError` that says what to install."""
    path = shutil.which("java")
    if path is None:
        raise JavaNotFoundError(
            "The ScienceWorld and TextWorldExpress environments run a Java simulator, and no `java` is on "
            "PATH. Install a Java runtime (version 11 or later), e.g. `apt-get install openjdk-17-jre-headless` "
            "or `conda install -c conda-forge openjdk=17`, then run again."
        )
    return path


def gateway(jar: str, cwd: str) -> Any:
    """The py4j gateway of the simulator in `jar`, started on the first call of the process.

    Args:
        jar (`str`): The simulator's jar (shipped inside its Python package).
        cwd (`str`): The folder the JVM runs in (the package's, where the simulator finds its data).

    Returns:
        `py4j.java_gateway.JavaGateway`: Shared by every caller with the same `jar`.

    Raises:
        `JavaNotFoundError`: No `java` on PATH.
    """
    with _LOCK:
        if jar not in _GATEWAYS:
            require_java()
            from py4j.java_gateway import GatewayParameters, JavaGateway, launch_gateway

            port, process = launch_gateway(
                classpath=jar, die_on_exit=True, cwd=cwd, return_proc=True, javaopts=["-Xss8m"]
            )
            _GATEWAYS[jar] = JavaGateway(
                gateway_parameters=GatewayParameters(auto_field=True, port=port), java_process=process
            )
        return _GATEWAYS[jar]


def running_gateways() -> int:
    """How many simulator JVMs this process has started and not shut down."""
    return len(_GATEWAYS)


@atexit.register
def shutdown() -> None:
    """Shut every simulator JVM down (run at exit; safe to call twice)."""
    with _LOCK:
        for jar in list(_GATEWAYS):
            gw = _GATEWAYS.pop(jar)
            process = gw.java_process
            try:
                gw.shutdown()
            finally:
                if process is not None and process.poll() is None:
                    process.kill()
                    process.wait()
