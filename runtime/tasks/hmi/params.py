"""Settings of the ``hmi`` task (the site file's task block), each bounded."""

from __future__ import annotations

from pydantic import Field, model_validator

from runtime.api import Params


class HmiParams(Params):
    host: str = Field("127.0.0.1", description="bind address: loopback unless operators reach it over a network")
    port: int = Field(15512, ge=1, le=65535)
    users_file: str = Field("var/hmi/users.json", description="local users (relative: to the site file); 0600")
    cert_file: str | None = Field(None, description="PEM certificate: HTTPS (and Secure cookies) when set")
    key_file: str | None = Field(None, description="PEM private key of cert_file")
    session_s: float = Field(8 * 3600.0, ge=60, le=7 * 86400, description="a login lasts this long (real time)")
    login_failures: int = Field(5, ge=1, le=100, description="failed logins per client address per window")
    login_window_s: float = Field(60.0, ge=1, le=3600, description="the window of login_failures (real time)")
    push_s: float = Field(0.5, ge=0.05, le=10, description="live values pushed at most this often (real time)")
    history_s: float = Field(60.0, ge=1, le=3600, description="what happened: one sample per this (cycle clock)")
    history_points: int = Field(2000, ge=10, le=100_000, description="samples kept for the plan chart")
    events_kept: int = Field(2000, ge=10, le=100_000, description="events kept for the event log page")
    default_expiry_s: float = Field(900.0, gt=0, le=86_400, description="expiry offered for a mode request")

    @model_validator(mode="after")
    def _tls_pair(self) -> HmiParams:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (HTTPS needs both)")
        return self
