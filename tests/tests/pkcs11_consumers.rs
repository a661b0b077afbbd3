//! Real PKCS#11 consumers against `libkms_pkcs11.so` over a live node:
//! OpenSC `pkcs11-tool`, GnuTLS `p11tool`, Java `keytool` through
//! SunPKCS11, and Python `PyKCS11` (walkthrough 3 of PRODUCT.md).

use std::path::Path;
use std::process::{Command, Output};

use kms_tests::ok;
use kms_tests::pkcs11::{module_path, KmsNode, ENCLAVE};

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("panicked"), "{cmd:?}: {all}");
    out
}

fn success(cmd: &mut Command) -> String {
    let out = run(cmd);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{text}",
        out.status
    );
    text
}

fn tool(node: &KmsNode) -> Command {
    tool_with(&node.config)
}

/// `pkcs11-tool` on our module with the module configuration `config`.
fn tool_with(config: &Path) -> Command {
    let mut c = Command::new("pkcs11-tool");
    c.env("KMS_PKCS11_CONFIG", config)
        .arg("--module")
        .arg(module_path());
    c
}

/// `p11tool --list-tokens` through our module.
fn p11tool_tokens(config: &Path) -> String {
    success(
        Command::new("p11tool")
            .env("KMS_PKCS11_CONFIG", config)
            .arg("--provider")
            .arg(module_path())
            .arg("--list-tokens"),
    )
}

/// `keytool -list` through SunPKCS11 on our module (`java_cfg`: the
/// SunPKCS11 configuration, written here).
fn keytool_list(config: &Path, java_cfg: &Path, extra: &[&str]) -> String {
    write_java_config(java_cfg);
    success(
        Command::new("keytool")
            .env("KMS_PKCS11_CONFIG", config)
            .args(extra)
            .args(["-list", "-keystore", "NONE", "-storetype", "PKCS11"])
            .args([
                "-providerClass",
                "sun.security.pkcs11.SunPKCS11",
                "-providerArg",
            ])
            .arg(java_cfg)
            .args(["-storepass", "1234"]),
    )
}

/// A Python script run with our module's path as its first argument.
fn python(config: &Path, script: &str, args: &[&Path]) -> String {
    success(
        Command::new("python3")
            .env("KMS_PKCS11_CONFIG", config)
            .arg("-c")
            .arg(script)
            .arg(module_path())
            .args(args),
    )
}

/// `pkcs11-tool` -L, -M, -O, --keygen, AES-CBC-PAD encrypt and decrypt,
/// wrap and unwrap, --test.
#[test]
fn pkcs11_tool() {
    let node = KmsNode::start("");
    ok(&node.server.cli(None, &["add-enclave", "second"]));
    let dir = node.tmp.path();

    let slots = success(tool(&node).arg("-L"));
    assert!(slots.contains("token label        : p11"), "{slots}");
    assert!(slots.contains("token label        : second"), "{slots}");
    assert!(slots.contains("token manufacturer : kms"), "{slots}");

    let mechs = success(tool(&node).args(["--token-label", ENCLAVE, "-M"]));
    for m in [
        "AES-KEY-GEN",
        "AES-GCM",
        "AES-CBC-PAD",
        "AES-KEY-WRAP",
        "SHA256-HMAC",
        "SHA256",
    ] {
        assert!(mechs.contains(m), "{m} missing:\n{mechs}");
    }

    // --keygen makes a cluster key that `kms ls-key` shows.
    success(tool(&node).args([
        "--token-label",
        ENCLAVE,
        "--login",
        "--pin",
        "1234",
        "--keygen",
        "--key-type",
        "AES:32",
        "--label",
        "k1",
    ]));
    let keys = ok(&node.server.cli(None, &["ls-key", "-e", ENCLAVE]));
    assert!(keys.contains("k1"), "{keys}");
    let objs = success(tool(&node).args(["--token-label", ENCLAVE, "-O"]));
    assert!(
        objs.contains("Secret Key Object") && objs.contains("label:      k1"),
        "{objs}"
    );

    // AES-CBC-PAD round trip under the cluster key.
    let plain = dir.join("plain.txt");
    std::fs::write(&plain, b"attack at dawn, and bring 33 bytes").unwrap();
    let enc = dir.join("enc.bin");
    let dec = dir.join("dec.txt");
    let iv = "000102030405060708090a0b0c0d0e0f";
    let help = run(Command::new("pkcs11-tool").arg("--help"));
    let supports_iv = [help.stdout, help.stderr]
        .iter()
        .any(|o| o.windows(4).any(|w| w == b"--iv"));
    let mut e = tool(&node);
    e.args([
        "--token-label",
        ENCLAVE,
        "--encrypt",
        "--label",
        "k1",
        "-m",
        "AES-CBC-PAD",
    ]);
    if supports_iv {
        e.args(["--iv", iv]);
    }
    success(e.arg("-i").arg(&plain).arg("-o").arg(&enc));
    let ct = std::fs::read(&enc).unwrap();
    assert_eq!(ct.len(), 48);
    let mut d = tool(&node);
    d.args([
        "--token-label",
        ENCLAVE,
        "--decrypt",
        "--label",
        "k1",
        "-m",
        "AES-CBC-PAD",
    ]);
    if supports_iv {
        d.args(["--iv", iv]);
    }
    success(d.arg("-i").arg(&enc).arg("-o").arg(&dec));
    assert_eq!(std::fs::read(&dec).unwrap(), std::fs::read(&plain).unwrap());

    // Unwrap: a key wrapped under k1 elsewhere (here by PyKCS11 through the
    // module) becomes a cluster key. Wrap: pkcs11-tool can only wrap a token
    // key, and cluster keys are never extractable: a clean error.
    let wrapped = dir.join("wrapped.bin");
    let script = r#"
import sys, PyKCS11
lib = PyKCS11.PyKCS11Lib(); lib.load(sys.argv[1])
slot = [s for s in lib.getSlotList(tokenPresent=True) if lib.getTokenInfo(s).label.strip() == 'p11'][0]
s = lib.openSession(slot, PyKCS11.CKF_SERIAL_SESSION | PyKCS11.CKF_RW_SESSION)
kek = s.findObjects([(PyKCS11.CKA_LABEL, 'k1')])[0]
sk = s.createObject([(PyKCS11.CKA_CLASS, PyKCS11.CKO_SECRET_KEY), (PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_AES),
                     (PyKCS11.CKA_TOKEN, False), (PyKCS11.CKA_VALUE, bytes(range(32))), (PyKCS11.CKA_EXTRACTABLE, True)])
open(sys.argv[2], 'wb').write(bytes(s.wrapKey(kek, sk, PyKCS11.Mechanism(PyKCS11.CKM_AES_KEY_WRAP, None))))
"#;
    python(&node.config, script, &[&wrapped]);
    // CKA_ID of a cluster key is its name: "k1" is 6b31.
    success(
        tool(&node)
            .args([
                "--token-label",
                ENCLAVE,
                "--login",
                "--pin",
                "1234",
                "--unwrap",
            ])
            .args([
                "-m",
                "AES-KEY-WRAP",
                "--id",
                "6b31",
                "--key-type",
                "AES:",
                "--label",
                "unwrapped",
            ])
            .arg("-i")
            .arg(&wrapped),
    );
    // (pkcs11-tool 0.23 puts no label in the unwrap template: the module
    // names such a key p11-<random hex>.)
    // Exactly one key more than k1: "unwrapped" or, with pkcs11-tool 0.23
    // (Debian 12's), p11-<hex>.
    let keys = ok(&node.server.cli(None, &["--json", "ls-key", "-e", ENCLAVE]));
    let v: serde_json::Value = serde_json::from_str(&keys).unwrap();
    let mut names: Vec<&str> = v
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {keys}"))
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .filter(|n| *n != "k1")
        .collect();
    assert_eq!(names.len(), 1, "not exactly one imported key: {keys}");
    let name = names.pop().unwrap();
    assert!(
        name == "unwrapped"
            || name
                .strip_prefix("p11-")
                .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit())),
        "the imported key's name: {keys}"
    );
    let out = run(tool(&node)
        .args([
            "--token-label",
            ENCLAVE,
            "--login",
            "--pin",
            "1234",
            "--wrap",
        ])
        .args([
            "-m",
            "AES-KEY-WRAP",
            "--id",
            "6b31",
            "--application-id",
            "6b31",
        ])
        .arg("-o")
        .arg(dir.join("nope.bin")));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("CKR_KEY_UNEXTRACTABLE"),
        "{text}"
    );

    // --test runs pkcs11-tool's own checks on what the token offers.
    let t = success(tool(&node).args([
        "--token-label",
        ENCLAVE,
        "--login",
        "--pin",
        "1234",
        "--test",
    ]));
    assert!(t.contains("No errors"), "{t}");
}

/// `p11tool --list-tokens` sees one token per enclave.
#[test]
fn p11tool_lists_tokens() {
    let node = KmsNode::start("");
    let out = p11tool_tokens(&node.config);
    assert!(out.contains("Label: p11"), "{out}");
    assert!(out.contains("Manufacturer: kms"), "{out}");
    assert!(out.contains("token=p11"), "{out}");
}

/// Java `keytool -list` through SunPKCS11 shows the cluster keys.
#[test]
fn java_keytool_lists_keys() {
    let node = KmsNode::start("");
    ok(&node
        .server
        .cli(None, &["add-key", "-e", ENCLAVE, "java-key"]));
    let cfg = node.tmp.path().join("sunpkcs11.cfg");
    let out = keytool_list(&node.config, &cfg, &["-J-Djava.security.debug="]);
    assert!(out.contains("java-key"), "{out}");
    assert!(out.contains("SecretKeyEntry"), "{out}");
}

fn write_java_config(path: &Path) {
    std::fs::write(
        path,
        format!(
            "name = kms\nlibrary = {}\nslotListIndex = 0\n",
            module_path().display()
        ),
    )
    .unwrap();
}

/// Python `PyKCS11` (from PyPI) does AES-GCM with a cluster key and a
/// session key.
#[test]
fn python_pykcs11_aes_gcm() {
    let node = KmsNode::start("");
    ok(&node.server.cli(None, &["add-key", "-e", ENCLAVE, "py-key"]));
    let script = r#"
import sys, PyKCS11
from PyKCS11 import LowLevel as LL
lib = PyKCS11.PyKCS11Lib()
lib.load(sys.argv[1])
slot = [s for s in lib.getSlotList(tokenPresent=True) if lib.getTokenInfo(s).label.strip() == 'p11'][0]
s = lib.openSession(slot, PyKCS11.CKF_SERIAL_SESSION | PyKCS11.CKF_RW_SESSION)
s.login('1234')
key = s.findObjects([(PyKCS11.CKA_CLASS, PyKCS11.CKO_SECRET_KEY), (PyKCS11.CKA_LABEL, 'py-key')])[0]
iv = bytes(range(12))
m = PyKCS11.AES_GCM_Mechanism(iv, b'header', 128)
ct = bytes(s.encrypt(key, b'hello from python', m))
assert len(ct) == 17 + 16, len(ct)
assert bytes(s.decrypt(key, ct, m)) == b'hello from python'
bad = PyKCS11.AES_GCM_Mechanism(bytes(12), b'header', 128)
try:
    s.decrypt(key, ct, bad)
    sys.exit('a wrong IV decrypted')
except PyKCS11.PyKCS11Error as e:
    assert e.value == PyKCS11.CKR_ENCRYPTED_DATA_INVALID, e
sk = s.generateKey([(PyKCS11.CKA_CLASS, PyKCS11.CKO_SECRET_KEY), (PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_AES),
                    (PyKCS11.CKA_VALUE_LEN, 32), (PyKCS11.CKA_TOKEN, False), (PyKCS11.CKA_ENCRYPT, True),
                    (PyKCS11.CKA_DECRYPT, True)], PyKCS11.Mechanism(PyKCS11.CKM_AES_KEY_GEN))
ct = bytes(s.encrypt(sk, b'session key', m))
assert bytes(s.decrypt(sk, ct, m)) == b'session key'
print('ok')
"#;
    let out = python(&node.config, script, &[]);
    assert!(out.contains("ok"), "{out}");
}

/// Java through SunPKCS11: AES/GCM/NoPadding and AES/CBC/PKCS5Padding
/// (CKM_AES_CBC_PAD) with a cluster key (a single-file Java program).
#[test]
fn java_sunpkcs11_cipher() {
    let node = KmsNode::start("");
    ok(&node
        .server
        .cli(None, &["add-key", "-e", ENCLAVE, "java-aes"]));
    let dir = node.tmp.path();
    let cfg = dir.join("sunpkcs11.cfg");
    write_java_config(&cfg);
    let src = dir.join("KmsCipher.java");
    std::fs::write(
        &src,
        r#"import java.security.*;
import javax.crypto.*;
import javax.crypto.spec.*;

public class KmsCipher {
    public static void main(String[] a) throws Exception {
        Provider p = Security.getProvider("SunPKCS11").configure(a[0]);
        KeyStore ks = KeyStore.getInstance("PKCS11", p);
        ks.load(null, "1234".toCharArray());
        Key k = ks.getKey(a[1], null);
        byte[] iv = new byte[12];
        new SecureRandom().nextBytes(iv);
        Cipher c = Cipher.getInstance("AES/GCM/NoPadding", p);
        c.init(Cipher.ENCRYPT_MODE, k, new GCMParameterSpec(128, iv));
        c.updateAAD("aad".getBytes());
        byte[] ct = c.doFinal("hello from java".getBytes());
        c.init(Cipher.DECRYPT_MODE, k, new GCMParameterSpec(128, iv));
        c.updateAAD("aad".getBytes());
        String gcm = new String(c.doFinal(ct));
        ct[0] ^= 1;
        c.init(Cipher.DECRYPT_MODE, k, new GCMParameterSpec(128, iv));
        c.updateAAD("aad".getBytes());
        boolean tamperedFails = false;
        try { c.doFinal(ct); } catch (GeneralSecurityException e) { tamperedFails = true; }
        Cipher cbc = Cipher.getInstance("AES/CBC/PKCS5Padding", p);
        byte[] civ = new byte[16];
        cbc.init(Cipher.ENCRYPT_MODE, k, new IvParameterSpec(civ));
        byte[] ct2 = cbc.doFinal("cbc round trip".getBytes());
        cbc.init(Cipher.DECRYPT_MODE, k, new IvParameterSpec(civ));
        String cbcPt = new String(cbc.doFinal(ct2));
        System.out.println(gcm + "|" + cbcPt + "|" + ct.length + "|" + ct2.length + "|" + tamperedFails);
    }
}
"#,
    )
    .unwrap();
    let out = success(
        Command::new("java")
            .env("KMS_PKCS11_CONFIG", &node.config)
            .arg(&src)
            .arg(&cfg)
            .arg("java-aes"),
    );
    assert!(
        out.contains("hello from java|cbc round trip|31|16|true"),
        "{out}"
    );
    assert!(!out.contains("WARN"), "{out}");
}

/// Walkthrough 3 on a three-node cluster: `pkcs11-tool --keygen` makes a
/// key that `kms ls-key` shows (a write: every node is up); then, with the
/// first server of the module's list killed, `pkcs11-tool -L`/`-O`,
/// AES-CBC-PAD and AES-GCM round trips, wrap and unwrap, `p11tool
/// --list-tokens` and `keytool -list` all work through the others.
#[test]
fn walkthrough_3_with_one_node_of_three_down() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes = kms_tests::cluster(&tmp, 3, kms_tests::SEED_HSM_KEY);
    ok(&nodes[0].cli(None, &["add-enclave", ENCLAVE]));
    let config = tmp.path().join("kms-pkcs11.toml");
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    kms_tests::pkcs11::write_config(&config, &urls, &nodes[0].root_key, "");
    let tool = || {
        let mut c = tool_with(&config);
        c.args(["--token-label", ENCLAVE]);
        c
    };
    success(tool().args([
        "--login",
        "--pin",
        "1234",
        "--keygen",
        "--key-type",
        "AES:32",
        "--label",
        "k1",
    ]));
    let keys = ok(&nodes[1].cli(None, &["ls-key", "-e", ENCLAVE]));
    assert!(keys.contains("k1"), "{keys}");

    // The first server the module knows goes down.
    nodes[0].kill9();

    let slots = success(tool_with(&config).arg("-L"));
    assert!(slots.contains("token label        : p11"), "{slots}");
    let objs = success(tool().arg("-O"));
    assert!(objs.contains("label:      k1"), "{objs}");

    let dir = tmp.path();
    let (plain, enc, dec) = (dir.join("p"), dir.join("e"), dir.join("d"));
    std::fs::write(&plain, b"one node of three is down").unwrap();
    let iv = "000102030405060708090a0b0c0d0e0f";
    success(
        tool()
            .args([
                "--encrypt",
                "--label",
                "k1",
                "-m",
                "AES-CBC-PAD",
                "--iv",
                iv,
            ])
            .arg("-i")
            .arg(&plain)
            .arg("-o")
            .arg(&enc),
    );
    success(
        tool()
            .args([
                "--decrypt",
                "--label",
                "k1",
                "-m",
                "AES-CBC-PAD",
                "--iv",
                iv,
            ])
            .arg("-i")
            .arg(&enc)
            .arg("-o")
            .arg(&dec),
    );
    assert_eq!(std::fs::read(&dec).unwrap(), std::fs::read(&plain).unwrap());

    // AES-GCM, wrap and unwrap (of a session key, under the cluster key).
    let script = r#"
import sys, PyKCS11
lib = PyKCS11.PyKCS11Lib()
lib.load(sys.argv[1])
slot = [s for s in lib.getSlotList(tokenPresent=True) if lib.getTokenInfo(s).label.strip() == 'p11'][0]
s = lib.openSession(slot, PyKCS11.CKF_SERIAL_SESSION | PyKCS11.CKF_RW_SESSION)
kek = s.findObjects([(PyKCS11.CKA_CLASS, PyKCS11.CKO_SECRET_KEY), (PyKCS11.CKA_LABEL, 'k1')])[0]
m = PyKCS11.AES_GCM_Mechanism(bytes(range(12)), b'aad', 128)
ct = bytes(s.encrypt(kek, b'gcm with a node down', m))
assert bytes(s.decrypt(kek, ct, m)) == b'gcm with a node down'
tmpl = [(PyKCS11.CKA_CLASS, PyKCS11.CKO_SECRET_KEY), (PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_AES),
        (PyKCS11.CKA_TOKEN, False), (PyKCS11.CKA_ENCRYPT, True), (PyKCS11.CKA_DECRYPT, True),
        (PyKCS11.CKA_EXTRACTABLE, True)]
sk = s.generateKey(tmpl + [(PyKCS11.CKA_VALUE_LEN, 32)], PyKCS11.Mechanism(PyKCS11.CKM_AES_KEY_GEN))
kw = PyKCS11.Mechanism(PyKCS11.CKM_AES_KEY_WRAP, None)
wrapped = bytes(s.wrapKey(kek, sk, kw))
assert len(wrapped) == 40, len(wrapped)
sk2 = s.unwrapKey(kek, wrapped, tmpl, kw)
ct = bytes(s.encrypt(sk, b'envelope', m))
assert bytes(s.decrypt(sk2, ct, m)) == b'envelope'
print('ok')
"#;
    let out = python(&config, script, &[]);
    assert!(out.contains("ok"), "{out}");

    let tokens = p11tool_tokens(&config);
    assert!(tokens.contains("Label: p11"), "{tokens}");

    let out = keytool_list(&config, &dir.join("sunpkcs11.cfg"), &[]);
    assert!(
        out.contains("k1") && out.contains("SecretKeyEntry"),
        "{out}"
    );
}
