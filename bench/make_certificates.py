"""Signs COUNT installed certificates locally for bench/daemon.sh, without any ACME issuance.

    make_certificates.py DIR COUNT

One root CA -> one intermediate -> COUNT ECDSA P-256 leaves (SAN cN.bench.example.com, 90 days,
one key each). Writes DIR/root.pem and, for N = 1..COUNT, DIR/cN/domain.crt (leaf +
intermediate) and DIR/cN/domain.key (PKCS#8, mode 0600). Needs python3-cryptography.
"""
import datetime, os, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ExtendedKeyUsageOID

root_dir, n = sys.argv[1], int(sys.argv[2])
now = datetime.datetime.now(datetime.timezone.utc)
def name(cn): return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
def ca(subject, key, issuer, issuer_key, pathlen):
    b = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=365))
         .add_extension(x509.BasicConstraints(ca=True, path_length=pathlen), critical=True)
         .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if issuer_key is not key:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    return b.sign(issuer_key, hashes.SHA256())
root_key = ec.generate_private_key(ec.SECP256R1())
root = ca("regcert bench root", root_key, "regcert bench root", root_key, 1)
int_key = ec.generate_private_key(ec.SECP256R1())
inter = ca("regcert bench intermediate", int_key, "regcert bench root", root_key, 0)
inter_pem = inter.public_bytes(serialization.Encoding.PEM)
os.makedirs(root_dir, exist_ok=True)
with open(os.path.join(root_dir, "root.pem"), "wb") as f:
    f.write(root.public_bytes(serialization.Encoding.PEM))
aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(int_key.public_key())
for i in range(1, n + 1):
    dns = f"c{i}.bench.example.com"
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(name(dns)).issuer_name(name("regcert bench intermediate"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now - datetime.timedelta(hours=1) + datetime.timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(aki, critical=False)
            .sign(int_key, hashes.SHA256()))
    d = os.path.join(root_dir, f"c{i}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "domain.crt"), "wb") as f:
        f.write(leaf.public_bytes(serialization.Encoding.PEM) + inter_pem)
    fd = os.open(os.path.join(d, "domain.key"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
