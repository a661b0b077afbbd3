#!/usr/bin/env python3
"""Regenerates the trimmed test vectors in this directory from git mirrors.

    trim.py WYCHEPROOF_GIT_DIR RUSTCRYPTO_SIGNATURES_GIT_DIR

Reads the files with `git show HEAD:<path>` and keeps, per file, a few cases of
every (flags, result) combination, up to a cap, so every kind of invalid case
survives. Big byte strings that are only compared (never fed to the code) are
replaced by their SHA-256 (`sigSha256`, `pkSha256`, `skSha256`): see README.md.
"""
import hashlib, json, subprocess, sys
from collections import Counter

WP, RC = sys.argv[1], sys.argv[2]
OUT = __file__.rsplit("/", 1)[0]


def show(repo, path):
    data = subprocess.check_output(["git", "-C", repo, "show", "HEAD:" + path])
    commit = subprocess.check_output(["git", "-C", repo, "rev-parse", "HEAD"]).decode().strip()
    return json.loads(data), commit


def sha(hexstr):
    return hashlib.sha256(bytes.fromhex(hexstr)).hexdigest()


def pick(groups, per_kind, cap, skip=lambda g, t: False):
    """Keeps up to per_kind cases per (flags, result), at most cap in all."""
    seen, kept, total = Counter(), [], 0
    for g in groups:
        tests = []
        for t in g["tests"]:
            if skip(g, t):
                continue
            k = (tuple(t.get("flags", [])), t["result"])
            if seen[k] < per_kind and total < cap:
                seen[k] += 1
                total += 1
                tests.append(t)
        if tests:
            kept.append(dict(g, tests=tests))
    return kept


def wycheproof(name, out, group_keys, per_kind, cap, skip=lambda g, t: False, test_map=None):
    d, commit = show(WP, "testvectors_v1/" + name)
    groups = []
    for g in pick(d["testGroups"], per_kind, cap, skip):
        ng = {k: g[k] for k in group_keys if k in g}
        ng["tests"] = [test_map(g, t) if test_map else t for t in g["tests"]]
        groups.append(ng)
    n = sum(len(g["tests"]) for g in groups)
    doc = {
        "vendored": {
            "source": "https://github.com/C2SP/wycheproof/blob/%s/testvectors_v1/%s" % (commit, name),
            "license": "Apache-2.0 (Copyright Google LLC and the Wycheproof authors)",
            "trimmed": "%d of %d cases kept by kms-node/tests/vectors/trim.py" % (n, d["numberOfTests"]),
        },
        "algorithm": d["algorithm"],
        "notes": {k: v.get("description", "") for k, v in d.get("notes", {}).items()},
        "testGroups": groups,
    }
    with open(OUT + "/" + out, "w") as f:
        json.dump(doc, f, indent=0, separators=(",", ":"))
    print(out, n, "cases")


wycheproof("ecdsa_secp256r1_sha256_p1363_test.json", "wycheproof_ecdsa_p256_sha256_p1363.json",
           ["publicKeyDer", "sha"], 2, 36)
wycheproof("ecdsa_secp384r1_sha384_p1363_test.json", "wycheproof_ecdsa_p384_sha384_p1363.json",
           ["publicKeyDer", "sha"], 2, 36)
wycheproof("ed25519_test.json", "wycheproof_ed25519.json", ["publicKeyDer"], 4, 34)
wycheproof("rsa_signature_2048_sha256_test.json", "wycheproof_rsa_pkcs1_2048_sha256.json",
           ["publicKeyDer", "sha"], 3, 26)
wycheproof("rsa_pss_2048_sha256_mgf1_32_test.json", "wycheproof_rsa_pss_2048_sha256_mgf1_32.json",
           ["publicKeyDer", "sha", "mgfSha", "sLen"], 6, 30)
wycheproof("rsa_oaep_2048_sha256_mgf1sha256_test.json", "wycheproof_rsa_oaep_2048_sha256_mgf1sha256.json",
           ["privateKeyPkcs8", "sha", "mgfSha"], 6, 24)
wycheproof("rsa_oaep_2048_sha1_mgf1sha1_test.json", "wycheproof_rsa_oaep_2048_sha1_mgf1sha1.json",
           ["privateKeyPkcs8", "sha", "mgfSha"], 5, 18)

# ML-DSA verify: the signatures are 2.4-4.6 KB each, so few cases, all kinds of invalid.
VERIFY_IDS = {"44": {1, 3, 5, 6, 8, 16, 19, 64, 81, 140},
              "65": {3, 8}, "87": {1, 8}}
for ps, ids in VERIFY_IDS.items():
    wycheproof("mldsa_%s_verify_test.json" % ps, "wycheproof_mldsa_%s_verify.json" % ps, ["publicKey"],
               1000, 1000, skip=lambda g, t, ids=ids: int(t["tcId"]) not in ids)

# ML-DSA sign from a seed (pure, external interface, deterministic): the signature
# is only compared, so it is kept as its SHA-256. Internal (mu-only) and
# randomized (rnd given) cases need interfaces the module does not offer.
def sign_map(g, t):
    t = {k: v for k, v in t.items() if k not in ("mu",)}
    if "sig" in t:
        t["sigSha256"] = sha(t.pop("sig")) if t["sig"] else ""
    return t


for ps in ("44", "65", "87"):
    wycheproof("mldsa_%s_sign_seed_test.json" % ps, "wycheproof_mldsa_%s_sign_seed.json" % ps,
               ["privateSeed", "publicKey"], 1000, 1000,
               skip=lambda g, t: "Internal" in t["flags"] or "Randomized" in t["flags"] or "msg" not in t,
               test_map=sign_map)
# publicKey of the sign groups: replace by its hash too (keygen check).
for ps in ("44", "65", "87"):
    p = OUT + "/wycheproof_mldsa_%s_sign_seed.json" % ps
    doc = json.load(open(p))
    for g in doc["testGroups"]:
        if g.get("publicKey"):
            g["publicKeySha256"] = sha(g.pop("publicKey"))
        else:
            g.pop("publicKey", None)
    json.dump(doc, open(p, "w"), indent=0, separators=(",", ":"))

# NIST ACVP (FIPS 204) as vendored by RustCrypto/signatures ml-dsa/tests (ACVP-Server 65370b8).
kg, commit = show(RC, "ml-dsa/tests/key-gen.json")
sg, _ = show(RC, "ml-dsa/tests/sig-gen.json")
sv, _ = show(RC, "ml-dsa/tests/sig-ver.json")
src = "https://github.com/RustCrypto/signatures/blob/%s/ml-dsa/tests/" % commit
acvp = {
    "vendored": {
        "source": src + "{key-gen,sig-gen,sig-ver}.json (NIST ACVP-Server gen-val/json-files ML-DSA-*-FIPS204 internalProjection.json, commit 65370b8)",
        "license": "public domain (NIST data, 17 U.S.C. 105)",
        "trimmed": "keyGen: 4 cases per parameter set, pk/sk as SHA-256; sigGen: deterministic groups only, "
                   "1 case per set (shortest message), signature as SHA-256; sigVer: 1-2 cases per set. These files test the "
                   "FIPS 204 *internal* interface (Sign_internal/Verify_internal, no context).",
    },
    "keyGen": [], "sigGen": [], "sigVer": [],
}
for g in kg["testGroups"]:
    for t in g["tests"][:4]:
        acvp["keyGen"].append({"parameterSet": g["parameterSet"], "tcId": t["tcId"], "seed": t["seed"],
                               "pkSha256": sha(t["pk"]), "skSha256": sha(t["sk"])})
nsg = {"ML-DSA-44": 1, "ML-DSA-65": 1, "ML-DSA-87": 1}
for g in sg["testGroups"]:
    if str(g["deterministic"]).lower() != "true":
        continue
    for t in sorted(g["tests"], key=lambda t: len(t["message"]))[: nsg[g["parameterSet"]]]:
        acvp["sigGen"].append({"parameterSet": g["parameterSet"], "tcId": t["tcId"], "sk": t["sk"],
                               "message": t["message"], "signatureSha256": sha(t["signature"])})
nsv = {"ML-DSA-44": 2, "ML-DSA-65": 2, "ML-DSA-87": 1}
for g in sv["testGroups"]:
    tests = []
    for want in (True, False):
        for t in g["tests"]:
            if (str(t["testPassed"]).lower() == "true") == want and len(tests) < nsv[g["parameterSet"]]:
                if want and any(str(x["testPassed"]).lower() == "true" for x in tests):
                    continue
                tests.append({k: t[k] for k in ("tcId", "testPassed", "message", "signature", "reason")})
    acvp["sigVer"].append({"parameterSet": g["parameterSet"], "pk": g["pk"], "tests": tests})
with open(OUT + "/acvp_mldsa_fips204.json", "w") as f:
    json.dump(acvp, f, indent=0, separators=(",", ":"))
print("acvp keyGen", len(acvp["keyGen"]), "sigGen", len(acvp["sigGen"]),
      "sigVer", sum(len(g["tests"]) for g in acvp["sigVer"]))
