"""gateway/tpm.py against a real software TPM (swtpm): sealing the at-rest data keys to one TPM,
and the cloud client key made inside it (``edgeline-gateway tpm-key``)."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from gateway.atrest import AtRestError, EncryptionSettings, FileSealer, open_keyring
from gateway.cli import main
from gateway.tpm import SEALED_MAGIC, TpmError, TpmKey, TpmSealer
from tests.support.swtpm import Swtpm


@pytest.fixture
def tpm(tmp_path: Path) -> Iterator[Swtpm]:
    with Swtpm(tmp_path / "tpm") as t:
        yield t


@pytest.fixture
def other_tpm(tmp_path: Path) -> Iterator[Swtpm]:
    """A second TPM: its own seeds, so its own storage key."""
    with Swtpm(tmp_path / "other-tpm") as t:
        yield t


def test_sealer_round_trip_and_what_it_refuses(tpm: Swtpm, other_tpm: Swtpm, tmp_path: Path) -> None:
    secret = bytes(range(32))
    sealer = TpmSealer(tpm.tcti)
    blob = sealer.seal(secret)
    assert blob.startswith(SEALED_MAGIC) and secret not in blob  # the TPM encrypted it
    assert sealer.unseal(blob) == secret
    assert TpmSealer(tpm.tcti).unseal(sealer.seal(secret)) != blob  # a new object each time, same secret back

    with pytest.raises(AtRestError, match="made by another TPM"):
        TpmSealer(other_tpm.tcti).unseal(blob)  # the SD card in another gateway
    flipped = bytearray(blob)
    flipped[-10] ^= 0x01  # one bit of the encrypted private part
    with pytest.raises(AtRestError, match="or was altered"):
        sealer.unseal(bytes(flipped))
    with pytest.raises(AtRestError, match="truncated or damaged"):
        sealer.unseal(blob[:-3])
    with pytest.raises(AtRestError, match="file sealer"):
        sealer.unseal(FileSealer(tmp_path / "file-sealer.key", create=True).seal(secret))
    with pytest.raises(AtRestError, match=r"1\.\.128 bytes"):
        sealer.seal(b"x" * 129)
    tpm.stop()
    with pytest.raises(AtRestError, match=r"no TPM at .*simulator running"):
        sealer.unseal(blob)


def test_tpm_key_command_writes_a_tpm_bound_key_and_its_csr(tpm: Swtpm, other_tpm: Swtpm, tmp_path: Path) -> None:
    key_file, csr_file = tmp_path / "cloud.key", tmp_path / "cloud.csr"
    args = ["tpm-key", "--tcti", tpm.tcti, "--key-out", str(key_file), "--csr-out", str(csr_file), "--cn", "gw-1"]
    assert main(args) == 0
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    pem = key_file.read_bytes()
    assert pem.startswith(b"-----BEGIN TSS2 PRIVATE KEY-----")
    key = TpmKey.from_pem(pem, str(key_file))

    csr = x509.load_pem_x509_csr(csr_file.read_bytes())
    assert csr.is_signature_valid  # signed inside the TPM, with the key of the file
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "gw-1"
    assert csr.public_key() == key.public_key()

    key.check(tpm.tcti)
    with pytest.raises(TpmError, match="made by another TPM"):
        key.check(other_tpm.tcti)  # the key file alone is useless
    with pytest.raises(TpmError, match="not a TSS2 PRIVATE KEY"):
        TpmKey.from_pem(csr_file.read_bytes(), "cloud.csr")

    assert main(args) == 2  # never overwrites a key (its certificate would no longer match)
    assert key_file.read_bytes() == pem


def test_key_ring_sealed_by_the_tpm(tpm: Swtpm, other_tpm: Swtpm, tmp_path: Path) -> None:
    """[encryption] sealer = "tpm": the data keys of gateway/atrest.py sealed by the real TPM."""
    settings = EncryptionSettings(key_dir=tmp_path / "keys", sealer="tpm", tpm_tcti=tpm.tcti)
    ring = open_keyring(settings, create=True, writer=True)
    try:
        record = ring.cipher().encrypt(b"a reading", b"row 1")
        ring.rotate()  # a second data key, sealed too; the first stays for the records under it
    finally:
        ring.close()
    sealed = sorted((tmp_path / "keys").glob("key-*.sealed"))
    assert len(sealed) == 2 and all(f.read_bytes().startswith(SEALED_MAGIC) for f in sealed)
    ring = open_keyring(settings)
    try:
        assert ring.decrypt(record, b"row 1") == b"a reading"
    finally:
        ring.close()
    # The key directory copied to another gateway (another TPM): no data key comes out of it.
    elsewhere = EncryptionSettings(key_dir=tmp_path / "keys", sealer="tpm", tpm_tcti=other_tpm.tcti)
    with pytest.raises(AtRestError, match=r"cannot be unsealed by the tpm sealer: .*made by another TPM"):
        open_keyring(elsewhere)  # the key ring unseals its keys when it opens
