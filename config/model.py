"""The configuration model: frozen dataclasses, every field with a default.

Nothing here reads files or the environment; ``config.loader`` does that and
validates the values before building these objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    # Public base URL used in printed URLs and in CDP/AIA extensions; None means
    # "http://<host>:<port>" for printing and no CDP/AIA in certificates.
    public_url: str | None = None
    # Request bodies above this are answered with HTTP 413.
    max_body_bytes: int = 64 * 1024
    # certmonger sends ~3.5 kB (RSA-2048) to ~5.4 kB (RSA-4096) GET queries; a Windows device
    # enrolled by Intune sends its multi-kilobyte challenge blob inside a GET query.
    max_line_bytes: int = 96 * 1024
    # One header field (name or value) above this is answered with HTTP 400; the request
    # line keeps max_line_bytes, so one connection cannot pin 96 KiB per header field.
    max_header_field_bytes: int = 8 * 1024
    # The whole head (request line and header fields) above this is answered with HTTP 431.
    max_head_bytes: int = 128 * 1024
    # Server processes sharing the port (SO_REUSEPORT). 0 (the default): one per CPU
    # available to this process (affinity mask and cgroup CPU quota), the scaling model
    # of an RSA-bound server; set 1 to serve in a single process.
    workers: int = 0
    # Bearer token for the status API; None: the status API answers loopback clients only.
    api_token: str | None = None
    # Bearer token for /metrics; None: /metrics answers loopback clients only.
    metrics_token: str | None = None
    # Addresses or CIDR networks of reverse proxies whose X-Forwarded-For is believed
    # (config.clients). A proxy on this host must be listed, or every client it forwards
    # looks local.
    trusted_proxies: tuple[str, ...] = ()
    # Total time a client has for a request's line and headers (also: for the first
    # request of a new connection, and for a TLS handshake).
    header_timeout_seconds: int = 10
    # Total time a client has to send a request body, from the end of its headers.
    body_timeout_seconds: int = 30
    # An idle keep-alive connection is closed after this; NTLM's Type 1/2/3 exchange
    # needs the connection kept between its requests.
    keepalive_timeout_seconds: int = 15
    # Total time an answer has to reach a client that reads it (a client that pipelines
    # requests and never reads its answers is cut off after this).
    write_timeout_seconds: int = 30
    # Requests answered in one run of pipelined requests on a connection; the last one
    # closes the connection (the client retries the rest on a new one).
    max_pipelined_requests: int = 16
    # Open connections per worker process; more are closed at once. 0: derived from the
    # file-descriptor limit (scep_ca.server.fdlimit).
    max_connections: int = 0


@dataclass(frozen=True)
class TLSConfig:
    cert: Path | None = None
    key: Path | None = None


@dataclass(frozen=True)
class CAConfig:
    key_size: int = 2048
    # Subject of the self-signed CA created by ``scep-ca init``.
    subject: str = "CN=scep-ca,O=scep-ca"
    validity_days: int = 3650
    # Name of the environment variable holding the CA key passphrase (None: unencrypted key).
    passphrase_env: str | None = None


@dataclass(frozen=True)
class RAConfig:
    # Validity of the RA certificates made by ``init``, ``ra create`` and renewal (capped at
    # the CA's own notAfter).
    validity_days: int = 730
    # An RA certificate this close to its notAfter is renewed (at start, then daily).
    renew_before_days: int = 30


@dataclass(frozen=True)
class MetricsConfig:
    # The per-integration certificate counts of /metrics are recomputed in the background
    # when older than this; a scrape never waits for the count (bench/metrics_scrape.py).
    counts_max_age_seconds: int = 60


@dataclass(frozen=True)
class NotifyConfig:
    # step-ca-style signed JSON POSTs for RA renewals, CA expiry and expiring devices;
    # None: no notifications. Signed with the secret in the environment variable ``secret_env``.
    webhook_url: str | None = None
    secret_env: str | None = None
    timeout_seconds: float = 10.0
    # Attempts per notification (network error or non-2xx), spaced out by retry_seconds.
    attempts: int = 3
    retry_seconds: float = 30.0


@dataclass(frozen=True)
class ScepConfig:
    allow_des: bool = True
    # Whether the CA certificate rides along in the certs-only reply bag (Cisco wants it, Juniper refuses).
    include_ca_in_reply: bool = False
    # RenewalReq is accepted from this many days before the old certificate expires.
    renewal_days: int = 14
    # A request waiting for approval expires after this long; polls then get FAILURE.
    pending_expiry_hours: int = 168


@dataclass(frozen=True)
class ChallengeConfig:
    # Bytes of randomness; rendered as 2*N uppercase hex characters (NDES PasswordLength).
    length_bytes: int = 8
    validity_minutes: int = 60
    # NDES PasswordMax: unused, unexpired challenges per integration at once.
    max_unused: int = 5
    utf16_bom: bool = False
    lockout_failures: int = 10
    lockout_window_seconds: int = 300
    lockout_seconds: int = 900
    # Basic logins' scrypt checks (~0.1 s CPU and 32 MiB each) running at once per process,
    # and how many more may wait; beyond that a Basic login gets 503 with Retry-After.
    basic_check_concurrency: int = 2
    basic_check_queue: int = 16


@dataclass(frozen=True)
class IntuneConfig:
    # Microsoft Entra ID's token endpoint base and Microsoft Graph (README "Validators", intune);
    # tests point them at a local stand-in.
    login_url: str = "https://login.microsoftonline.com/"
    graph_url: str = "https://graph.microsoft.com/"
    # Each call to Entra ID, Graph or Intune; one retry follows a network error, 429 or 5xx.
    timeout_seconds: float = 10.0
    # PEM file of CA certificates trusted for the three services instead of the system's
    # store (a TLS-inspecting proxy's CA, or the tests' stand-in CA). None: the system's.
    ca_file: Path | None = None


@dataclass(frozen=True)
class WebhookConfig:
    # The whole webhook call (connect, send, answer); one retry follows a network error or 5xx.
    timeout_seconds: float = 10.0


@dataclass(frozen=True)
class ValidatorLimitsConfig:
    """Bounds on the outbound calls of intune and webhook validators, per integration
    (scep_ca.services.validators.gate). Over any of them a request gets HTTP 503 with
    Retry-After, before any outbound call."""

    # Validations of one integration in flight at once, per process.
    concurrency: int = 8
    # Longest wait for one of those slots; shorter than the call timeouts.
    queue_seconds: float = 2.0
    # Token bucket per integration: validations per second, and the burst allowed.
    integration_rate: float = 20.0
    integration_burst: int = 40
    # Token bucket per (integration, client address): a device enrolls once, a whole
    # office behind one NAT address may enroll at once.
    client_rate: float = 1.0
    client_burst: int = 20


@dataclass(frozen=True)
class CertificateConfig:
    validity_days: int = 365
    key_sizes: tuple[int, ...] = (2048,)


# The most CRL shards a CA may have: /crl/<ca id>/<n>.crl answers for n below it.
MAX_CRL_SHARDS = 4096


@dataclass(frozen=True)
class RevocationConfig:
    # nextUpdate of the CRL; it is regenerated after every change and before this runs out.
    crl_next_update_hours: int = 24
    ocsp_validity_minutes: int = 60
    # CRL shards new certificates are spread over (their CDP names /crl/<ca id>/<shard>.crl);
    # 0: their CDP names the full CRL. At most MAX_CRL_SHARDS.
    crl_shards: int = 128


@dataclass(frozen=True)
class StoreConfig:
    # None: SQLite file ``scep-ca.sqlite3`` in the data directory.
    dsn: str | None = None
    pool_min: int = 1
    pool_max: int = 10


@dataclass(frozen=True)
class LogConfig:
    level: str = "INFO"
    format: str = "text"  # "text" or "json"


# keys.pkcs11.ra_keys: where new RA keys go when a token is configured.
RA_KEYS_IN_TOKEN = "token"
RA_KEYS_IN_FILES = "files"
RA_KEY_PLACES = frozenset({RA_KEYS_IN_TOKEN, RA_KEYS_IN_FILES})


@dataclass(frozen=True)
class Pkcs11Config:
    # The vendor's PKCS#11 library; None: keys are files in the data directory.
    module: Path | None = None
    token_label: str | None = None
    # The user PIN comes from this environment variable, or from this file (one of the two).
    pin_env: str | None = None
    pin_file: Path | None = None
    # A token that went missing (removed, HSM restarting) is looked for again by re-initialising
    # the library, at most this often: SoftHSM and most modules list slots only at C_Initialize.
    reinit_interval_seconds: int = 5
    # Where new RA keys go (RA_KEY_PLACES): the token, or 0600 files as without one while the CA
    # key stays in the token: the RA keys are used on every request (README "Keys in an HSM").
    ra_keys: str = RA_KEYS_IN_TOKEN


@dataclass(frozen=True)
class KeysConfig:
    pkcs11: Pkcs11Config = field(default_factory=Pkcs11Config)


@dataclass(frozen=True)
class AuditConfig:
    # The tamper-evident audit log (the audit package). Off only to measure what it costs
    # (bench/enroll.py): with it off, nothing records who did what.
    enabled: bool = True
    # The server logs a signed checkpoint of every chain's head this often, and at stop.
    checkpoint_interval_seconds: int = 600
    # Also written here as checkpoint-<time>.json (None: only the log line).
    checkpoint_dir: Path | None = None


@dataclass(frozen=True)
class ConsoleConfig:
    """The operator web console (scep_ca/console), served by `scep-ca serve` beside the server."""

    enabled: bool = True
    # host:port ([v6]:port for IPv6). Anything but loopback needs console.tls.
    listen: str = "127.0.0.1:8081"
    tls: TLSConfig = field(default_factory=TLSConfig)
    # A session ends after this long without a request, and this long after login in any case.
    session_idle_seconds: int = 15 * 60
    session_max_seconds: int = 8 * 3600
    # The dashboard's "expiring" column: valid certificates expiring within this many days.
    expiring_days: int = 30

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]


def split_listen(listen: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); ValueError when it is neither."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError("must be host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("an IPv6 address must be in brackets: [::1]:8081")
    number = int(port)
    if not 0 < number < 65536:
        raise ValueError("the port must be 1-65535")
    return host, number


@dataclass(frozen=True)
class Config:
    data_dir: Path = Path("./scep-ca-data")
    server: ServerConfig = field(default_factory=ServerConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)
    ca: CAConfig = field(default_factory=CAConfig)
    scep: ScepConfig = field(default_factory=ScepConfig)
    challenge: ChallengeConfig = field(default_factory=ChallengeConfig)
    intune: IntuneConfig = field(default_factory=IntuneConfig)
    webhook: WebhookConfig = field(default_factory=WebhookConfig)
    validators: ValidatorLimitsConfig = field(default_factory=ValidatorLimitsConfig)
    certificate: CertificateConfig = field(default_factory=CertificateConfig)
    revocation: RevocationConfig = field(default_factory=RevocationConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    log: LogConfig = field(default_factory=LogConfig)
    keys: KeysConfig = field(default_factory=KeysConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    ra: RAConfig = field(default_factory=RAConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)

    @property
    def base_url(self) -> str:
        """The URL printed to operators: the public URL, else the listen address."""
        if self.server.public_url:
            return self.server.public_url.rstrip("/")
        scheme = "https" if self.tls.cert else "http"
        host = self.server.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{scheme}://{host}:{self.server.port}"

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "scep-ca.sqlite3"
