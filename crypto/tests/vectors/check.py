#!/usr/bin/env python3
"""An independent implementation of the Tacit protocol's classical parts, in Python.

It reads the vectors in this directory and recomputes them with the `cryptography`
package (X25519, Ed25519, HKDF, ChaCha20-Poly1305) and the standard library (HMAC,
SHA-512), following SECURITY.md alone: identity and prekey signatures, the PQXDH session
key and associated data (taking the ML-KEM shared secret from the vector), the first
prekey message, a whole Double Ratchet conversation (producing every message byte for
byte), the KDF vectors, the safety numbers, sender-key distributions and messages,
attachments (STREAM), and the provisioning seal and link answer
(taking the ML-KEM ciphertext and shared secret from the vector; must-fail answers must be
refused, as must every must-fail case of the other files). Exit status 0 means every
value matched.

    python3 -m pip install cryptography && python3 crypto/tests/vectors/check.py
"""
import hashlib
import hmac
import json
import struct
import sys
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

HERE = Path(__file__).parent
RAW = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)
checked = 0


def same(what, got, want):
    global checked
    if got != want:
        sys.exit(f"MISMATCH {what}:\n  got  {got.hex() if isinstance(got, bytes) else got}\n  want {want.hex() if isinstance(want, bytes) else want}")
    checked += 1


def hkdf(salt, ikm, info, length):
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def x_pub(secret):
    return X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes(*RAW)


def x_dh(secret, public):
    return X25519PrivateKey.from_private_bytes(secret).exchange(X25519PublicKey.from_public_bytes(public))


def kdf_rk(rk, dh_out):
    out = hkdf(rk, dh_out, b"Tacit_Ratchet_Root_v1", 64)
    return out[:32], out[32:]


def kdf_ck(ck):
    return hmac.new(ck, b"\x01", "sha256").digest(), hmac.new(ck, b"\x02", "sha256").digest()


def message_keys(mk):
    out = hkdf(b"\0" * 32, mk, b"Tacit_Ratchet_MessageKeys_v1", 44)
    return out[:32], out[32:]


def identity(random):
    """Ed25519 seed || X25519 secret -> (encoded identity key, ed private, x secret)."""
    ed = Ed25519PrivateKey.from_private_bytes(random[:32])
    x = random[32:64]
    xp = x_pub(x)
    sig = ed.sign(b"Tacit_Sign_IdentityDH_v1" + xp)
    return b"\x01" + ed.public_key().public_bytes(*RAW) + xp + sig, ed, x


def verify(ed_pub, sig, message, what):
    global checked
    Ed25519PublicKey.from_public_bytes(ed_pub).verify(sig, message)  # raises on failure
    checked += 1


def address(a):
    user = a["user"].encode()
    return bytes([len(user)]) + user + struct.pack(">I", a["device"])


class Party:
    """A Double Ratchet state (spec section 3), enough for in-order delivery."""

    def __init__(self, ad, rk, dhs_secret, dhr=None, cks=None):
        self.ad, self.rk, self.dhs, self.dhr = ad, rk, dhs_secret, dhr
        self.cks, self.ckr, self.ns, self.nr, self.pn = cks, None, 0, 0, 0

    def encrypt(self, plaintext):
        mk, self.cks = kdf_ck(self.cks)
        header = b"\x01\x01" + x_pub(self.dhs) + struct.pack(">II", self.pn, self.ns)
        self.ns += 1
        key, nonce = message_keys(mk)
        return header + ChaCha20Poly1305(key).encrypt(nonce, plaintext, self.ad + header)

    def decrypt(self, message, random):
        header, sealed = message[:42], message[42:]
        assert header[:2] == b"\x01\x01"
        dh_pub = header[2:34]
        pn, n = struct.unpack(">II", header[34:42])
        if dh_pub != self.dhr:  # DH ratchet step (in-order delivery: pn == nr)
            assert pn == self.nr
            self.pn, self.ns, self.nr, self.dhr = self.ns, 0, 0, dh_pub
            self.rk, self.ckr = kdf_rk(self.rk, x_dh(self.dhs, dh_pub))
            self.dhs = random
            self.rk, self.cks = kdf_rk(self.rk, x_dh(self.dhs, dh_pub))
        assert n == self.nr
        mk, self.ckr = kdf_ck(self.ckr)
        self.nr += 1
        key, nonce = message_keys(mk)
        return ChaCha20Poly1305(key).decrypt(nonce, sealed, self.ad + header)


def check_pqxdh(v):
    h = bytes.fromhex
    alice_key, _, alice_x = identity(h(v["alice_identity_random"]))
    bob_key, bob_ed, bob_x = identity(h(v["bob_identity_random"]))
    same("alice identity", alice_key, h(v["alice_identity_key"]))
    same("bob identity", bob_key, h(v["bob_identity_key"]))

    # The bundle: identity || signed prekey || flag [|| one-time prekey] || KEM prekey.
    b = h(v["bundle"])
    same("bundle identity", b[:129], bob_key)
    ed_b = bob_key[1:33]
    pos = 129

    def x_prekey(label, secret, want_id):
        nonlocal pos
        kid, key, sig = b[pos:pos + 4], b[pos + 4:pos + 36], b[pos + 36:pos + 100]
        pos += 100
        same(f"{label} id", struct.unpack(">I", kid)[0], want_id)
        same(f"{label} key", key, x_pub(secret))
        verify(ed_b, sig, label + kid + key, label)
        return key

    spk_secret = h(v["bob_signed_prekey_secret"])
    spk = x_prekey(b"Tacit_Sign_SignedPreKey_v1", spk_secret, v["bob_signed_prekey_id"])
    flag = b[pos]
    pos += 1
    same("one-time flag", flag, 1 if v["bob_one_time_prekey_id"] is not None else 0)
    otk = None
    if flag:
        otk = x_prekey(b"Tacit_Sign_OneTimePreKey_v1", h(v["bob_one_time_prekey_secret"]), v["bob_one_time_prekey_id"])
    kem_id, kind, ek, sig = b[pos:pos + 4], b[pos + 4:pos + 5], b[pos + 5:pos + 1189], b[pos + 1189:pos + 1253]
    same("KEM id", struct.unpack(">I", kem_id)[0], v["bob_kem_prekey_id"])
    same("KEM kind", kind, {"last_resort": b"\x02", "one_time": b"\x01"}[v["bob_kem_prekey_kind"]])
    verify(ed_b, sig, b"Tacit_Sign_KemPreKey_v1" + kem_id + kind + ek, "KEM prekey")
    same("bundle length", len(b), pos + 1253)

    # PQXDH.
    rnd = h(v["alice_random"])
    ek_a, alice_ratchet = rnd[:32], rnd[64:96]
    dhs = [x_dh(alice_x, spk), x_dh(ek_a, bob_key[33:65]), x_dh(ek_a, spk)]
    if otk:
        dhs.append(x_dh(ek_a, otk))
    for i, d in enumerate(dhs):
        same(f"dh{i + 1}", d, h(v[f"dh{i + 1}"]))
    same("dh4 absent", v["dh4"] is None, otk is None)
    ss = h(v["kem_shared_secret"])
    sk = hkdf(b"\0" * 32, b"\xff" * 32 + b"".join(dhs) + ss, b"Tacit_PQXDH_X25519_SHA-256_ML-KEM-768_v1", 32)
    same("session key", sk, h(v["session_key"]))
    ad = (b"Tacit_SessionAD_v1" + alice_key[1:65] + bob_key[1:65]
          + address(v["alice_address"]) + address(v["bob_address"]))
    same("associated data", ad, h(v["associated_data"]))

    # Alice: RatchetInitAlice, then her first message wrapped in a prekey message.
    rk, cks = kdf_rk(sk, x_dh(alice_ratchet, spk))
    alice = Party(ad, rk, alice_ratchet, dhr=spk, cks=cks)
    inner = alice.encrypt(h(v["plaintext"]))
    prefix = b"\x01\x02" + alice_key[1:] + x_pub(ek_a) + struct.pack(">I", v["bob_signed_prekey_id"])
    prefix += (b"\x01" + struct.pack(">I", v["bob_one_time_prekey_id"])) if otk else b"\x00"
    prefix += kem_id + h(v["kem_ciphertext"])
    same("first message", prefix + inner, h(v["message"]))

    # Bob: RatchetInitBob (his signed prekey is his first ratchet key), then the rest.
    bob = Party(ad, sk, spk_secret)
    same("first plaintext", bob.decrypt(inner, h(v["bob_random"])), h(v["plaintext"]))
    parties = {"alice": (alice, bob), "bob": (bob, alice)}
    for i, step in enumerate(v["ratchet"]):
        sender, receiver = parties[step["sender"]]
        random = h(step["receiver_random"])  # 32 bytes when the receiver steps the DH ratchet
        message = sender.encrypt(h(step["plaintext"]))
        same(f"ratchet step {i} message", message, h(step["message"]))
        same(f"ratchet step {i} plaintext", receiver.decrypt(message, random or None), h(step["plaintext"]))


def check_kdf(v):
    h = bytes.fromhex
    rk, ck = kdf_rk(h(v["root_key"]), h(v["dh_output"]))
    same("KDF_RK root", rk, h(v["next_root_key"]))
    same("KDF_RK chain", ck, h(v["chain_key"]))
    mk, nck = kdf_ck(ck)
    same("KDF_CK message key", mk, h(v["message_key"]))
    same("KDF_CK next chain key", nck, h(v["next_chain_key"]))
    key, nonce = message_keys(mk)
    same("AEAD key", key, h(v["aead_key"]))
    same("nonce", nonce, h(v["nonce"]))
    sealed = ChaCha20Poly1305(key).encrypt(nonce, h(v["plaintext"]), h(v["associated_data"]))
    same("sealed", sealed, h(v["sealed"]))


def party_hash(uid, key):
    d = hashlib.sha512(b"\0\0" + key + uid + key).digest()
    for _ in range(1, 5200):
        d = hashlib.sha512(d + key).digest()
    return d


def digits(d):
    return "".join("%05d" % (int.from_bytes(d[i:i + 5], "big") % 100000) for i in range(0, 30, 5))


def check_safety(v):
    h = bytes.fromhex
    a_key, _, _ = identity(h(v["alice_identity_random"]))
    b_key, _, _ = identity(h(v["bob_identity_random"]))
    same("alice identity", a_key, h(v["alice_identity_key"]))
    same("bob identity", b_key, h(v["bob_identity_key"]))
    ha = party_hash(v["alice_id"].encode(), a_key[1:65])
    hb = party_hash(v["bob_id"].encode(), b_key[1:65])
    da, db = digits(ha), digits(hb)
    same("displayable", da + db if da <= db else db + da, v["displayable"])
    same("alice scannable", b"\x01" + ha[:32] + hb[:32], h(v["alice_scannable"]))
    same("bob scannable", b"\x01" + hb[:32] + ha[:32], h(v["bob_scannable"]))


def sender_key_seal(ck, header, plaintext, signer):
    seed, _ = kdf_ck(ck)
    okm = hkdf(b"\0" * 32, seed, b"Tacit_SenderKey_MessageKeys_v1", 44)
    body = ChaCha20Poly1305(okm[:32]).encrypt(okm[32:], plaintext, header)
    return header + body + signer.sign(header + body)


def open_sender_key(message, distribution):
    """Opens a message as a member holding `distribution` (iteration 0) does; None when it
    must be refused."""
    group, chain_id, ck, pub = distribution[2:18], distribution[18:34], distribution[38:70], distribution[70:102]
    if len(message) < 38 + 16 + 64 or message[:2] != b"\x01\x03":
        return None
    if message[2:18] != group or message[18:34] != chain_id:
        return None
    signed, sig = message[:-64], message[-64:]
    try:
        Ed25519PublicKey.from_public_bytes(pub).verify(sig, signed)
    except Exception:
        return None
    (iteration,) = struct.unpack(">I", message[34:38])
    if iteration > 2000:
        return None
    for _ in range(iteration):
        _, ck = kdf_ck(ck)
    seed, _ = kdf_ck(ck)
    okm = hkdf(b"\0" * 32, seed, b"Tacit_SenderKey_MessageKeys_v1", 44)
    try:
        return ChaCha20Poly1305(okm[:32]).decrypt(okm[32:], signed[38:], signed[:38])
    except Exception:
        return None


def check_sender_keys(v):
    h = bytes.fromhex
    group, r = h(v["group_id"]), h(v["chain_random"])
    chain_id, ck, seed = r[:16], r[16:48], r[48:80]
    signer = Ed25519PrivateKey.from_private_bytes(seed)
    public = signer.public_key().public_bytes(*RAW)
    distribution = b"\x01\x04" + group + chain_id + struct.pack(">I", 0) + ck + public
    same("distribution", distribution, h(v["distribution"]))
    for i, (plaintext, want) in enumerate(zip(v["plaintexts"], v["messages"])):
        header = b"\x01\x03" + group + chain_id + struct.pack(">I", i)
        message = sender_key_seal(ck, header, h(plaintext), signer)
        same(f"sender-key message {i}", message, h(want))
        same(f"sender-key message {i} opens", open_sender_key(message, distribution), h(plaintext))
        _, ck = kdf_ck(ck)
    for case in v["must_fail"]:
        same(f"refused: {case['description']}", open_sender_key(h(case["message"]), distribution), None)


def attachment_plaintext(length):
    return bytes(j % 251 for j in range(length))


def attachment_seal(key, nonce, plaintext):
    payload = ChaCha20Poly1305(hkdf(nonce, key, b"Tacit_Attachment_Payload_v1", 32))
    chunks = [plaintext[i:i + 65536] for i in range(0, len(plaintext), 65536)] or [b""]
    out = b"\x01" + nonce
    for i, chunk in enumerate(chunks):
        last = b"\x01" if i == len(chunks) - 1 else b"\x00"
        out += payload.encrypt(i.to_bytes(11, "big") + last, chunk, b"")
    return out


def attachment_open(key, digest, blob):
    """The plaintext, or None when the blob must be refused (SECURITY.md, Attachments)."""
    if len(blob) < 17 + 16 or blob[0] != 1:
        return None
    payload = ChaCha20Poly1305(hkdf(blob[1:17], key, b"Tacit_Attachment_Payload_v1", 32))
    rest, out, i = blob[17:], b"", 0
    while True:
        last = len(rest) <= 65536 + 16
        chunk, rest = (rest, b"") if last else (rest[:65536 + 16], rest[65536 + 16:])
        try:
            out += payload.decrypt(i.to_bytes(11, "big") + (b"\x01" if last else b"\x00"), chunk, b"")
        except Exception:
            return None
        i += 1
        if last:
            break
    if not hmac.compare_digest(hashlib.sha256(blob).digest(), digest):
        return None
    return out


def check_attachment(v):
    h = bytes.fromhex
    key, nonce, plaintext = h(v["key"]), h(v["nonce_random"]), attachment_plaintext(v["length"])
    blob = attachment_seal(key, nonce, plaintext)
    same(f"attachment {v['description']} length", len(blob), v["blob_length"])
    same(f"attachment {v['description']} length formula", len(blob),
         17 + len(plaintext) + 16 * max(1, -(-len(plaintext) // 65536)))
    if v["blob"] is not None:
        same(f"attachment {v['description']} blob", blob, h(v["blob"]))
    digest = h(v["digest"])
    same(f"attachment {v['description']} digest", hashlib.sha256(blob).digest(), digest)
    same(f"attachment {v['description']} opens", attachment_open(key, digest, blob), plaintext)
    for case in v["must_fail"]:
        bad, bad_digest = bytearray(blob), bytearray(digest)
        if case.get("flip") is not None:
            bad[case["flip"]] ^= 1
        if case.get("truncate_to") is not None:
            del bad[case["truncate_to"]:]
        if case.get("append") is not None:
            bad += h(case["append"])
        if case.get("flip_digest"):
            bad_digest[0] ^= 1
        same(f"refused: {case['description']}", attachment_open(key, bytes(bad_digest), bytes(bad)), None)


def link_answer_key(recipient_public, secret):
    return hkdf(hashlib.sha256(recipient_public).digest(), secret, b"Tacit_LinkAnswer_v1", 32)


def link_answer_tag(key, context, sealed):
    return hmac.new(key, struct.pack(">H", len(context)) + context + sealed, hashlib.sha256).digest()


def open_link_answer(answer, secret, context, recipient_public, x_secret, kem_shares):
    """Opens a link answer as SECURITY.md says; None when it must be refused. `kem_shares`
    maps an ML-KEM ciphertext to its shared secret (this file has no ML-KEM)."""
    if len(answer) < 1 + 32 + 1 + 32 + 1088 + 16 or answer[0] != 1:
        return None
    tag, sealed = answer[1:33], answer[33:]
    if not hmac.compare_digest(tag, link_answer_tag(link_answer_key(recipient_public, secret), context, sealed)):
        return None
    if sealed[0] != 1:
        return None
    ek, ct, body = sealed[1:33], sealed[33:1121], sealed[1121:]
    dh = x_dh(x_secret, ek)
    if dh == b"\0" * 32 or ct not in kem_shares:
        return None
    okm = hkdf(b"\0" * 32, b"\xff" * 32 + dh + kem_shares[ct] + ek + ct + hashlib.sha256(recipient_public).digest(),
               b"Tacit_Provisioning_v1", 44)
    try:
        return ChaCha20Poly1305(okm[:32]).decrypt(okm[32:], body, context)
    except Exception:
        return None


def check_provisioning(v):
    h = bytes.fromhex
    rr, sr = h(v["recipient_random"]), h(v["seal_random"])
    x_secret, ephemeral = rr[:32], sr[:32]
    public = h(v["recipient_public"])
    # 0x01 || X25519 (32) || ML-KEM-768 encapsulation key (1184); the KEM half is taken as given.
    same("recipient key version", public[0], 1)
    same("recipient X25519 key", public[1:33], x_pub(x_secret))
    same("recipient key length", len(public), 1 + 32 + 1184)
    ct, ss = h(v["kem_ciphertext"]), h(v["kem_shared_secret"])
    context, plaintext, secret = h(v["context"]), h(v["plaintext"]), h(v["link_secret"])
    dh = x_dh(ephemeral, public[1:33])
    ek = x_pub(ephemeral)
    okm = hkdf(b"\0" * 32, b"\xff" * 32 + dh + ss + ek + ct + hashlib.sha256(public).digest(),
               b"Tacit_Provisioning_v1", 44)
    sealed = b"\x01" + ek + ct + ChaCha20Poly1305(okm[:32]).encrypt(okm[32:], plaintext, context)
    same("sealed", sealed, h(v["sealed"]))
    answer = b"\x01" + link_answer_tag(link_answer_key(public, secret), context, sealed) + sealed
    same("link answer", answer, h(v["answer"]))
    shares = {ct: ss}
    same("answer opens", open_link_answer(answer, secret, context, public, x_secret, shares), plaintext)
    for case in v["must_fail"]:
        got = open_link_answer(h(case["answer"]), secret, context, public, x_secret, shares)
        same(f"refused: {case['description']}", got, None)


for name, fn in [("kdf.json", check_kdf), ("pqxdh.json", check_pqxdh), ("safety_number.json", check_safety),
                 ("provisioning.json", check_provisioning), ("sender_keys.json", check_sender_keys),
                 ("attachments.json", check_attachment)]:
    for case in json.loads((HERE / name).read_text()):
        fn(case)
print(f"check.py: {checked} values matched an independent implementation")
