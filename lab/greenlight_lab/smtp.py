"""An SMTP sink: a small asyncio SMTP server that keeps every message it is given.

It speaks what smtplib sends: EHLO/HELO, AUTH PLAIN and AUTH LOGIN (one user, when given; a
wrong password answers 535), MAIL FROM, RCPT TO, DATA, RSET, NOOP, QUIT. It does not offer
STARTTLS (smtplib then refuses to send when asked for it: point a profile with
``starttls: false`` at it). Faults: each MAIL FROM asks ``faults.take("smtp", "mail", None)``;
an ``error`` rule answers its status when it is an SMTP code (4xx, 5xx: e.g. 451), else 421 and
closes; a ``stall`` rule holds the answer. The messages are ``messages``: ``{"from", "to",
"subject", "body", "raw", "at"}``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email
import email.policy
import time
from typing import Any

from greenlight_lab.faults import FaultRegistry

FAULT_TARGET = "smtp"


class SmtpSink:
    def __init__(self, faults: FaultRegistry, user: str | None = None, password: str | None = None) -> None:
        self.faults = faults
        self.user, self.password = user, password
        self.messages: list[dict[str, Any]] = []
        self._server: asyncio.Server | None = None
        self.port: int | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._server = await asyncio.start_server(self._session, host, port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    def _login_ok(self, user: str, password: str) -> bool:
        return self.user is not None and user == self.user and password == self.password

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def say(line: str) -> None:
            writer.write(line.encode() + b"\r\n")
            await writer.drain()

        async def line() -> str:
            raw = await asyncio.wait_for(reader.readline(), 60)
            if not raw:
                raise ConnectionError
            return raw.decode(errors="replace").rstrip("\r\n")

        sender: str | None = None
        recipients: list[str] = []
        authed = self.user is None
        try:
            await say("220 greenlight-lab ESMTP sink")
            while True:
                cmd = await line()
                verb = cmd.split(" ", 1)[0].upper()
                arg = cmd[len(verb) :].strip()
                if verb == "EHLO":
                    caps = ["250-greenlight-lab", "250-8BITMIME", "250-SIZE 10485760"]
                    if self.user is not None:
                        caps.append("250-AUTH PLAIN LOGIN")
                    await say("\r\n".join([*caps, "250 HELP"]))
                elif verb == "HELO":
                    await say("250 greenlight-lab")
                elif verb == "AUTH":
                    mech, _, initial = arg.partition(" ")
                    if mech.upper() == "PLAIN":
                        if not initial:
                            await say("334 ")
                            initial = await line()
                        parts = base64.b64decode(initial).split(b"\0")
                        user, password = (
                            (parts[1].decode(), parts[2].decode()) if len(parts) == 3 else ("", "")
                        )
                    elif mech.upper() == "LOGIN":
                        await say("334 VXNlcm5hbWU6")
                        user = base64.b64decode(await line()).decode()
                        await say("334 UGFzc3dvcmQ6")
                        password = base64.b64decode(await line()).decode()
                    else:
                        await say("504 5.5.4 Unrecognized authentication type")
                        continue
                    authed = self._login_ok(user, password)
                    await say(
                        "235 2.7.0 Authentication successful" if authed else "535 5.7.8 Authentication failed"
                    )
                elif verb == "MAIL":
                    if not authed:
                        await say("530 5.7.0 Authentication required")
                        continue
                    rule = self.faults.take(FAULT_TARGET, "mail", None)
                    if rule is not None:
                        if rule.mode == "stall":
                            await asyncio.sleep(rule.stall_s)
                        elif 400 <= rule.status < 600 and rule.status not in (421,):
                            await say(f"{rule.status} lab fault")
                            continue
                        else:
                            await say("421 4.3.2 lab fault: service not available, closing channel")
                            return
                    sender, recipients = arg.partition(":")[2].strip().strip("<>").split(">")[0], []
                    await say("250 2.1.0 OK")
                elif verb == "RCPT":
                    if sender is None:
                        await say("503 5.5.1 MAIL first")
                        continue
                    recipients.append(arg.partition(":")[2].strip().strip("<>").split(">")[0])
                    await say("250 2.1.5 OK")
                elif verb == "DATA":
                    if sender is None or not recipients:
                        await say("503 5.5.1 RCPT first")
                        continue
                    await say("354 End data with <CR><LF>.<CR><LF>")
                    chunks: list[str] = []
                    while (data := await line()) != ".":
                        chunks.append(data[1:] if data.startswith("..") else data)
                    raw = "\r\n".join(chunks)
                    msg = email.message_from_string(raw, policy=email.policy.default)
                    body = msg.get_body(preferencelist=("plain",))
                    self.messages.append(
                        {
                            "from": sender,
                            "to": recipients,
                            "subject": str(msg.get("Subject", "")),
                            "body": body.get_content() if body is not None else "",  # type: ignore[attr-defined]
                            "raw": raw,
                            "at": time.time(),
                        }
                    )
                    sender, recipients = None, []
                    await say("250 2.0.0 OK: queued")
                elif verb == "RSET":
                    sender, recipients = None, []
                    await say("250 2.0.0 OK")
                elif verb == "NOOP":
                    await say("250 2.0.0 OK")
                elif verb == "QUIT":
                    await say("221 2.0.0 Bye")
                    return
                else:
                    await say("502 5.5.2 Command not recognized")
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()
