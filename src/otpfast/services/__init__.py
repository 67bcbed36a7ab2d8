"""otpfast.services: the key ceremony, distribution (issue/verify) and administration logic,
plain Python over the store interface. net/, radius/ and the CLI call these; never the other
way round.

API as in /work/service-api.md. Additions (no deviation from the contract):

* ``ClientInfo``, ``IssuedOtp``, ``VerifyItem`` are frozen dataclasses in
  services.distribution; ``VerifyItem.client`` defaults to None.
* ``credential`` arguments accept bytes or str (the credential's text form; surrounding
  whitespace such as a credential file's newline is ignored).
* ``KeyServer(store, private_key, *, iterations=600_000, clock=time.time)``;
  ``keyserver.encrypt_phrase(public_key_pem, phrase, account, authority_id) -> bytes`` is the
  authority's side (OAEP labelled with account and authority); ``check_receipt`` and
  ``check_transcript`` verify the key server's signatures.
* Principals prove their credential by challenge-response (services.credentials):
  ``Distribution.authenticate(exchange, proof, *, source)`` and
  ``KeyServer.authenticate(...)``; ``Distribution.login(name, credential)`` is the in-process
  form. ``ClientInfo.session_key`` masks that session's OTPs (``unmask(key, account, nonce,
  masked, expires_at_ms)``).
* ``Admin`` (services.admin) is what the admin CLI calls; ``DataDir.admin(clock)`` builds it.
* Refusals are recorded in the audit log (outcome "refused"); that is the only change a
  refused call makes.
* ``Distribution.request`` also serves hotp accounts (server-issued, sharing the counter with
  an authenticator app: an issued OTP is verified through its issued row, an app's through
  the look-ahead window). Hash-chain OTPs need their issued row (single use, expiry) AND the
  paper's chain rule; H^k(x) == last for k <= window + 1 lets a chain continue past OTPs
  that were requested but never verified.
* ``account add --authorities`` requires the authorities to be registered first.
"""
from .distribution import ClientInfo, Distribution, IssuedOtp, VerifyItem
from .keyserver import KeyServer, encrypt_phrase
from .masking import unmask

__all__ = ["ClientInfo", "Distribution", "IssuedOtp", "KeyServer", "VerifyItem",
           "encrypt_phrase", "unmask"]
