"""SNS signing certificates: URL checks, a local certificate store, fetch once and cache.

Only certificates served by SNS itself are trusted: https, host sns.<region>.amazonaws.com
(or .amazonaws.com.cn), path ending in .pem. With a local directory configured, the URL's
basename is read from it instead of the network (tests, the local stack, pinned PEMs).
"""

from __future__ import annotations

import re
import threading
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
_BASENAME = re.compile(r"^[A-Za-z0-9._-]+\.pem$")


class CertificateError(ValueError):
    pass


def check_cert_url(url: object) -> str:
    """Return the URL's basename if it is a genuine SNS certificate URL, else raise."""
    if not isinstance(url, str) or not url:
        raise CertificateError("SigningCertURL missing" if not url else "SigningCertURL is not a string")
    if len(url) > 1024:
        raise CertificateError("SigningCertURL is over 1024 characters")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise CertificateError("SigningCertURL is not a URL") from None
    if parts.scheme != "https":
        raise CertificateError(f"SigningCertURL scheme {parts.scheme[:20]!r} is not https")
    # hostname lowercases and drops any port or userinfo; both would be suspicious, so compare netloc too.
    if parts.netloc != parts.hostname or not _HOST.match(parts.hostname or ""):
        raise CertificateError(f"SigningCertURL host {parts.netloc[:200]!r} is not an SNS host")
    if parts.query or parts.fragment:
        raise CertificateError("SigningCertURL has a query or fragment")
    basename = parts.path.rsplit("/", 1)[-1]
    if not parts.path.endswith(".pem") or not _BASENAME.match(basename):
        raise CertificateError("SigningCertURL path is not a .pem file")
    return basename


def _fetch_https(url: str, timeout: float = 10.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - URL checked above
        return resp.read()


class CertStore:
    """Public keys by certificate URL. Each certificate is loaded once per process.

    cert_dir: when set, certificates come only from this directory (by basename) and their
    validity dates are not checked (pinned PEMs, expired sample certificates); when empty,
    they are fetched over https and must be within their validity dates.
    """

    def __init__(self, cert_dir: str | Path | None = None, fetch=_fetch_https, now=None):
        self.cert_dir = Path(cert_dir) if cert_dir else None
        self._fetch = fetch
        self._now = now or (lambda: datetime.now(timezone.utc))
        self._keys: dict[str, RSAPublicKey] = {}
        self._lock = threading.Lock()
        self.loads = 0

    def public_key(self, url: str) -> RSAPublicKey:
        if not isinstance(url, str):
            raise CertificateError("SigningCertURL missing" if url is None else "SigningCertURL is not a string")
        key = self._keys.get(url)
        if key is not None:
            return key
        basename = check_cert_url(url)
        with self._lock:
            key = self._keys.get(url)
            if key is None:
                key = self._load(url, basename)
                self._keys[url] = key
                self.loads += 1
        return key

    def _load(self, url: str, basename: str) -> RSAPublicKey:
        if self.cert_dir is not None:
            path = self.cert_dir / basename
            try:
                pem = path.read_bytes()
            except OSError:
                raise CertificateError(f"certificate {basename} not in the local certificate store") from None
            cert = self._parse(pem, basename)
        else:
            try:
                pem = self._fetch(url)
            except Exception as exc:  # network errors: the message is retried via quarantine replay
                raise CertificateError(f"certificate {basename} could not be fetched: {type(exc).__name__}") from None
            cert = self._parse(pem, basename)
            now = self._now()
            if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
                raise CertificateError(f"certificate {basename} is outside its validity period")
        key = cert.public_key()
        if not isinstance(key, RSAPublicKey):
            raise CertificateError(f"certificate {basename} does not hold an RSA key")
        return key

    @staticmethod
    def _parse(pem: bytes, basename: str) -> x509.Certificate:
        try:
            return x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise CertificateError(f"certificate {basename} is not a PEM certificate") from None


_SHARED: dict[str, CertStore] = {}
_SHARED_LOCK = threading.Lock()


def shared_cert_store(cert_dir: str | None) -> CertStore:
    """One store per directory for the life of the process, so each signing certificate is
    loaded once per process, not once per run or batch."""
    key = cert_dir or ""
    with _SHARED_LOCK:
        store = _SHARED.get(key)
        if store is None:
            store = _SHARED[key] = CertStore(cert_dir or None)
        return store
