import signal
import socket
import sys
from pathlib import Path

from devstack.ports import LOOPBACK
from devstack.process import ChildProcess, OwnsAChildProcess

# The directory that holds the `shared` package, so `python -m shared...` works from any cwd.
IMPORT_ROOT = Path(__file__).resolve().parents[1]


class SmtpSink(OwnsAChildProcess):
    """The SMTP sink as a child process of ours, so a test can stop or kill it."""

    STOP_SIGNAL = signal.SIGTERM
    STOP_TIMEOUT = 10.0

    def __init__(self, mail_dir: Path, port: int, host: str = LOOPBACK) -> None:
        self.mail_dir = Path(mail_dir)
        self.port = port
        self.host = host
        self._process = ChildProcess(f"smtp-sink:{port}", self.mail_dir / ".smtp-sink.log")

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def messages(self) -> list[Path]:
        """The .eml files received so far, oldest first."""
        return sorted(self.mail_dir.glob("*.eml"))

    def start(self, timeout: float = 30.0) -> None:
        self.launch()
        self.wait_until_ready(timeout)

    def launch(self) -> None:
        self.mail_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "devstack.smtp_sink",
            "--port",
            str(self.port),
            "--dir",
            str(self.mail_dir),
            "--host",
            self.host,
        ]
        self._process.launch(argv, cwd=IMPORT_ROOT)

    def wait_until_ready(self, timeout: float = 30.0) -> None:
        self._process.wait_until_ready(self._greets, timeout, "greeting on its port")

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        self._process.stop(self.STOP_SIGNAL, timeout)

    def kill(self) -> None:
        self._process.kill()

    def _greets(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as connection:
                return connection.recv(3) == b"220"
        except OSError:
            return False
