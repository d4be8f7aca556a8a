"""The forwarder's TLS context when its client key is held in a TPM (``[forward.tls] tpm_tcti``).

The server is verified as with a key file: against ``ca_file`` (or the system's CAs), host name
included.  The client certificate is ``cert_file``; its key is the TSS2 key file, whose signatures
the TPM makes (gateway/tls_external_key.py, gateway/tpm.py).  The key is loaded into the TPM once
here, so a key of another TPM, a missing TPM or a certificate for another key stops the forwarder
at start with a message, instead of failing every connection attempt after it.
"""

from __future__ import annotations

import ssl

from gateway.errors import GatewayError
from gateway.forward.config import TLSConfig
from gateway.forward.errors import ForwardConfigError


def tpm_client_context(tls: TLSConfig) -> ssl.SSLContext:
    """A client context that verifies the broker and signs with the TPM key of ``tls``."""
    from gateway.tls_external_key import use_external_key
    from gateway.tpm import TpmKey

    if tls.tpm_tcti is None or tls.key_file is None or tls.cert_file is None:
        raise ForwardConfigError("forward.tls.tpm_tcti: needs forward.tls.key_file and forward.tls.cert_file")
    tcti, where = tls.tpm_tcti, f"forward.tls.key_file {tls.key_file}"
    try:
        key = TpmKey.from_pem(tls.key_file.read_bytes(), where)
        key.check(tcti)
        ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file is not None else None)
        if not tls.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        use_external_key(ctx, tls.cert_file, key.public_key(), lambda digest: key.sign_digest(tcti, digest))
    except OSError as exc:  # the key or CA file (ssl.SSLError is an OSError too)
        raise ForwardConfigError(f"forward.tls: {exc}") from None
    except GatewayError as exc:  # TpmError, ExternalKeyError: the message says which file and why
        raise ForwardConfigError(f"forward.tls (TPM {tcti}): {exc}") from None
    return ctx
