"""Alert emails over SMTP (smtplib): STARTTLS when asked, AUTH when a login is given.

The password never appears in an error or a log line. Connection failures, timeouts and 4xx
answers are transient; 5xx answers (a refused login, a refused recipient) are permanent.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage

from greenlight.errors import Forbidden, PermanentError, TransientError

PASSWORD_ENV = "GREENLIGHT_SMTP_PASSWORD"


class Mailer:
    """Sends plain-text mail through one SMTP server."""

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        *,
        starttls: bool = True,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.host, self.port, self.sender = host, port, sender
        self.starttls = starttls
        self.username = username
        self._password = password
        self._timeout = timeout_s

    def __repr__(self) -> str:
        return f"Mailer(host={self.host!r}, port={self.port}, starttls={self.starttls})"

    def send(self, recipients: list[str], subject: str, body: str) -> str:
        """Send one message to ``recipients``; return its Message-ID."""
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = ", ".join(recipients)
        msg["Subject"] = subject
        msg["Message-ID"] = _message_id(self.sender)
        msg.set_content(body)
        where = f"smtp {self.host}:{self.port}"
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self._timeout) as smtp:
                smtp.ehlo()
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                    smtp.ehlo()
                if self.username:
                    smtp.login(self.username, self._password or "")
                refused = smtp.send_message(msg, from_addr=self.sender, to_addrs=recipients)
        except smtplib.SMTPAuthenticationError as e:
            raise Forbidden(
                f"{where}: login as {self.username} refused ({e.smtp_code})", code=str(e.smtp_code)
            ) from None
        except smtplib.SMTPRecipientsRefused as e:
            raise PermanentError(
                f"{where}: every recipient refused: {', '.join(sorted(e.recipients))}"
            ) from None
        except smtplib.SMTPResponseException as e:
            kind = TransientError if 400 <= e.smtp_code < 500 else PermanentError
            raise kind(
                f"{where}: {e.smtp_code} {self._scrub(_text(e.smtp_error))}", code=str(e.smtp_code)
            ) from None
        except smtplib.SMTPNotSupportedError as e:
            raise PermanentError(f"{where}: {self._scrub(str(e))}") from None
        except (smtplib.SMTPException, OSError) as e:
            raise TransientError(f"{where}: {type(e).__name__}: {self._scrub(str(e))}") from None
        if refused:
            raise PermanentError(f"{where}: recipients refused: {', '.join(sorted(refused))}")
        return str(msg["Message-ID"])

    def _scrub(self, text: str) -> str:
        return text.replace(self._password, "***") if self._password else text


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _message_id(sender: str) -> str:
    from email.utils import make_msgid

    return make_msgid(domain=sender.rsplit("@", 1)[-1])
