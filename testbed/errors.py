"""Errors a person can act on: what was wrong, where, and what was expected or what to install."""


class TestbedError(Exception):
    """Base of the testbed's errors."""


class SpecError(TestbedError, ValueError):
    """A lab, node, link or scenario parameter is invalid; nothing was created."""


class MissingTool(TestbedError):
    """A program or kernel feature the lab needs is not there."""

    def __init__(self, what: str, install: str):
        super().__init__(f"{what} is missing: {install}")
        self.what = what
        self.install = install


class CommandFailed(TestbedError):
    def __init__(self, node: str, argv: list[str], returncode: int, stderr: str):
        cmd = " ".join(argv)
        super().__init__(f"on {node}: `{cmd}` exited {returncode}: {stderr.strip()[:400]}")
        self.returncode = returncode


class NotInSandbox(TestbedError):
    pass
