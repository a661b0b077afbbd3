//! `libkms_pkcs11.so` against a misbehaving server: an HTTPS server in the
//! test answers every `POST /v1/kms/...` with HTTP 200 and kms-go frames
//! that are wrong (an output of 1 MiB for 16 bytes of input, one byte too
//! many or too few, random or non-protobuf payloads, a frame cut short, a
//! frame length of 0xFFFFFFFF, an empty body, a frame of another command,
//! two frames, a body cut before its Content-Length). The key list is always
//! answered right, so the module has a cluster key to use.
//!
//! Through the raw C interface, C_Encrypt, C_Decrypt, C_Sign and C_WrapKey
//! write into a 32-byte buffer between canary bytes: a wrong answer is an
//! error (`CKR_DEVICE_ERROR`, or `CKR_BUFFER_TOO_SMALL` with the length), the
//! buffer and the canaries are untouched, and the process lives on through
//! several rounds; an honest answer in between still works.

use std::ptr::null_mut;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use cryptoki_sys::*;
use kms_client::raw::{self, RawMechanism};
use kms_client::{proto, ApiKey, Command};
use kms_tests::pkcs11::{module_path, raw_attr, write_config};
use prost::Message;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;

/// How the server answers the crypto commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// What a correct server would answer (the length the request implies).
    Honest,
    /// A valid frame whose output has 1 MiB.
    Huge,
    /// A valid frame whose output has one byte more than it should.
    OneMore,
    /// A valid frame whose output has one byte less than it should.
    OneLess,
    /// A frame of 4 KiB of random bytes (seeded: reproducible).
    Random,
    /// A frame whose payload is not protobuf.
    NotProtobuf,
    /// A frame whose header declares more bytes than the body holds.
    TruncatedFrame,
    /// A frame whose header declares 0xFFFFFFFF bytes.
    MaxLength,
    /// HTTP 200 with an empty body.
    Empty,
    /// A valid frame of another command id.
    WrongId,
    /// Two valid frames for one request.
    TwoFrames,
    /// A Content-Length 100 bytes larger than the body, then the connection
    /// is closed.
    CutBody,
}

const MODES: [Mode; 12] = [
    Mode::Honest,
    Mode::Huge,
    Mode::OneMore,
    Mode::OneLess,
    Mode::Random,
    Mode::NotProtobuf,
    Mode::TruncatedFrame,
    Mode::MaxLength,
    Mode::Empty,
    Mode::WrongId,
    Mode::TwoFrames,
    Mode::CutBody,
];

/// The byte every honest (or too long, or too short) output is made of.
const OUTPUT: u8 = 0x5A;

/// The server's switch: an index into [`MODES`], and a counter that seeds
/// the random answers.
struct Switch {
    mode: AtomicUsize,
    answers: AtomicU64,
}

impl Switch {
    fn set(&self, m: Mode) {
        let i = MODES.iter().position(|x| *x == m).expect("a mode");
        self.mode.store(i, Ordering::SeqCst);
    }

    fn get(&self) -> Mode {
        MODES[self.mode.load(Ordering::SeqCst)]
    }
}

/// A kms-go frame: u16 command id, u32 length (both big-endian), payload.
fn frame(id: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(6 + payload.len());
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// The payload of a KEY:RAWENCRYPT or KEY:RAWDECRYPT answer.
fn raw_response(data: Vec<u8>) -> Vec<u8> {
    proto::RawCryptResponse { version: 1, data }.encode_to_vec()
}

/// The payload of a KEY:MAC answer.
fn mac_response(mac: Vec<u8>) -> Vec<u8> {
    proto::MacResponse { version: 1, mac }.encode_to_vec()
}

/// The answer to one request body: the response body and the
/// Content-Length to declare.
fn answer(mode: Mode, req: &[u8], seed: u64) -> (Vec<u8>, usize) {
    let whole = |b: Vec<u8>| {
        let n = b.len();
        (b, n)
    };
    let Ok(frames) = kms_client::frame::decode_all(req) else {
        return (Vec::new(), 0);
    };
    let Some(first) = frames.first() else {
        return (Vec::new(), 0);
    };
    let id = first.id;
    let cmd = Command::from_id(id);
    // Listings are always right: the module sees the enclave "e" and the
    // AES key "k" in it.
    match cmd {
        Some(Command::KeyList | Command::KeyListAll) => {
            let keys = proto::ListKeysResponse {
                keys: vec![proto::KeyStatusResponse {
                    name: "k".into(),
                    version: 1,
                    r#type: "AES256".into(),
                    ..Default::default()
                }],
                continue_at: String::new(),
            };
            return whole(frame(id, &keys.encode_to_vec()));
        }
        Some(Command::EnclaveList) => {
            let enclaves = proto::ListEnclavesResponse {
                enclaves: vec![proto::EnclaveStatusResponse {
                    name: "e".into(),
                    ..Default::default()
                }],
                continue_at: String::new(),
            };
            return whole(frame(id, &enclaves.encode_to_vec()));
        }
        _ => {}
    }
    /// Encodes an output as the answer's protobuf.
    type Encode = fn(Vec<u8>) -> Vec<u8>;
    // The length of an honest output, and the encoding of an output.
    let (honest, encode): (usize, Encode) = match cmd {
        Some(c @ (Command::KeyRawEncrypt | Command::KeyRawDecrypt)) => {
            let r = proto::RawCryptRequest::decode(first.payload).unwrap_or_default();
            let tag_len = r.tag_length as usize;
            let n = match (c, RawMechanism::from_u32(r.mechanism)) {
                (Command::KeyRawEncrypt, Some(m)) => raw::encrypted_len(
                    m,
                    &raw::Params {
                        iv: &r.iv,
                        aad: &r.associated_data,
                        tag_len,
                    },
                    r.data.len(),
                ),
                (_, Some(RawMechanism::AesGcm)) => r.data.len().saturating_sub(tag_len),
                _ => r.data.len().saturating_sub(8),
            };
            (n, raw_response as fn(Vec<u8>) -> Vec<u8>)
        }
        Some(Command::KeyMac) => (32, mac_response as fn(Vec<u8>) -> Vec<u8>),
        _ => return whole(frame(id, &[])),
    };
    let output = |n: usize| encode(vec![OUTPUT; n]);
    match mode {
        Mode::Honest => whole(frame(id, &output(honest))),
        Mode::Huge => whole(frame(id, &output(1 << 20))),
        Mode::OneMore => whole(frame(id, &output(honest + 1))),
        Mode::OneLess => whole(frame(id, &output(honest.saturating_sub(1)))),
        Mode::Random => {
            let mut b = vec![0u8; 4096];
            rand::rngs::StdRng::seed_from_u64(seed).fill(&mut b[..]);
            whole(frame(id, &b))
        }
        Mode::NotProtobuf => whole(frame(id, &[0xFF; 64])),
        Mode::TruncatedFrame => {
            let mut b = frame(id, &output(honest));
            let keep = (b.len() / 2).max(7);
            b.truncate(keep);
            whole(b)
        }
        Mode::MaxLength => {
            let mut b = frame(id, &output(honest));
            b[2..6].copy_from_slice(&u32::MAX.to_be_bytes());
            whole(b)
        }
        Mode::Empty => (Vec::new(), 0),
        Mode::WrongId => whole(frame(id ^ 1, &output(honest))),
        Mode::TwoFrames => {
            let mut b = frame(id, &output(honest));
            b.extend(frame(id, &output(honest)));
            whole(b)
        }
        Mode::CutBody => {
            let b = frame(id, &output(honest));
            let n = b.len() + 100;
            (b, n)
        }
    }
}

/// Serves one request on one connection, then closes it.
async fn serve(
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    switch: Arc<Switch>,
) -> std::io::Result<()> {
    let mut tls = acceptor.accept(tcp).await?;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 << 10];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 << 10 {
            return Ok(());
        }
        let n = tls.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let body_len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + body_len {
        let n = tls.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let (status, (body, declared)) = if head.starts_with("post /v1/kms") {
        let seed = switch.answers.fetch_add(1, Ordering::SeqCst);
        let req = &buf[head_end..head_end + body_len];
        ("200 OK", answer(switch.get(), req, seed))
    } else {
        ("404 Not Found", (Vec::new(), 0))
    };
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/octet-stream\r\n\
         content-length: {declared}\r\nconnection: close\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).await?;
    tls.write_all(&body).await?;
    tls.shutdown().await
}

/// Starts the server on a thread of its own (it lives as long as the test
/// process); returns its port and its switch.
fn hostile_server() -> (u16, Arc<Switch>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    // Any Ed25519 certificate does: the module is configured `insecure`.
    let (cert, key) = ApiKey::generate().certificate().expect("certificate");
    let tls = rustls::ServerConfig::builder_with_provider(kms_client::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("server certificate");
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let switch = Arc::new(Switch {
        mode: AtomicUsize::new(0),
        answers: AtomicU64::new(0),
    });
    let s = switch.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(listener).expect("listener");
            while let Ok((tcp, _)) = l.accept().await {
                let (acceptor, s) = (acceptor.clone(), s.clone());
                tokio::spawn(async move {
                    let _ = serve(acceptor, tcp, s).await;
                });
            }
        });
    });
    (port, switch)
}

const CANARY: u8 = 0xC3;
const FILL: u8 = 0x11;
/// The capacity the caller gives.
const CAP: usize = 32;

/// A caller's buffer of [`CAP`] bytes between two runs of 64 canary bytes.
struct Guarded([u8; 64 + CAP + 64]);

impl Guarded {
    fn new() -> Self {
        let mut b = [CANARY; 64 + CAP + 64];
        b[64..64 + CAP].fill(FILL);
        Guarded(b)
    }

    /// The buffer passed to the module (with the provenance of the whole
    /// array, so that a write past it lands in the canaries).
    fn out(&mut self) -> *mut u8 {
        // SAFETY: 64 is within the array.
        unsafe { self.0.as_mut_ptr().add(64) }
    }

    fn middle(&self) -> &[u8] {
        &self.0[64..64 + CAP]
    }

    fn canaries_intact(&self) -> bool {
        self.0[..64]
            .iter()
            .chain(&self.0[64 + CAP..])
            .all(|b| *b == CANARY)
    }

    fn untouched(&self) -> bool {
        self.middle().iter().all(|b| *b == FILL)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Encrypt,
    Decrypt,
    Sign,
    Wrap,
}

impl Op {
    /// The output length of an honest answer.
    fn honest_len(self) -> usize {
        match self {
            // 16 bytes of plaintext and a 16-byte GCM tag.
            Op::Encrypt => 32,
            // 32 bytes of GCM ciphertext with its tag.
            Op::Decrypt => 16,
            Op::Sign => 32,
            // RFC 3394 of a 16-byte key.
            Op::Wrap => 24,
        }
    }
}

/// The module's function list and the objects of the test.
struct Ctx {
    f: &'static CK_FUNCTION_LIST,
    session: CK_SESSION_HANDLE,
    key: CK_OBJECT_HANDLE,
    session_key: CK_OBJECT_HANDLE,
}

impl Ctx {
    /// Runs `op` into the guarded buffer; returns the return value and the
    /// length the module set.
    fn run(&self, op: Op, g: &mut Guarded) -> (CK_RV, CK_ULONG) {
        let f = self.f;
        let (s, key) = (self.session, self.key);
        let mut iv = [7u8; 12];
        let mut gcm = CK_GCM_PARAMS {
            pIv: iv.as_mut_ptr(),
            ulIvLen: 12,
            ulIvBits: 96,
            pAAD: null_mut(),
            ulAADLen: 0,
            ulTagBits: 128,
        };
        let mut gcm_mech = CK_MECHANISM {
            mechanism: CKM_AES_GCM,
            pParameter: &mut gcm as *mut _ as *mut _,
            ulParameterLen: std::mem::size_of::<CK_GCM_PARAMS>() as CK_ULONG,
        };
        let plain = |mechanism| CK_MECHANISM {
            mechanism,
            pParameter: null_mut(),
            ulParameterLen: 0,
        };
        let mut data = [0x33u8; 32];
        let mut len = CAP as CK_ULONG;
        let out = g.out();
        // SAFETY: every pointer points to a live local; `out` has CAP
        // writable bytes (and canaries around them).
        let rv = unsafe {
            match op {
                Op::Encrypt => {
                    assert_eq!(f.C_EncryptInit.unwrap()(s, &mut gcm_mech, key), CKR_OK);
                    f.C_Encrypt.unwrap()(s, data.as_mut_ptr(), 16, out, &mut len)
                }
                Op::Decrypt => {
                    assert_eq!(f.C_DecryptInit.unwrap()(s, &mut gcm_mech, key), CKR_OK);
                    f.C_Decrypt.unwrap()(s, data.as_mut_ptr(), 32, out, &mut len)
                }
                Op::Sign => {
                    let mut m = plain(CKM_SHA256_HMAC);
                    assert_eq!(f.C_SignInit.unwrap()(s, &mut m, key), CKR_OK);
                    f.C_Sign.unwrap()(s, data.as_mut_ptr(), 16, out, &mut len)
                }
                Op::Wrap => {
                    let mut m = plain(CKM_AES_KEY_WRAP);
                    f.C_WrapKey.unwrap()(s, &mut m, key, self.session_key, out, &mut len)
                }
            }
        };
        (rv, len)
    }
}

#[test]
fn a_hostile_server_never_makes_the_module_write_past_a_buffer() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("p11.toml");
    let log = tmp.path().join("p11.log");
    // Set before the server thread starts.
    std::env::set_var("KMS_PKCS11_CONFIG", &cfg);
    let (port, switch) = hostile_server();
    write_config(
        &cfg,
        &[format!("https://127.0.0.1:{port}")],
        &ApiKey::generate(),
        &format!(
            "enclaves = [\"e\"]\nrefresh_ms = 3600000\ntimeout_ms = 10000\n\
             log_level = \"warn\"\nlog_file = \"{}\"\n",
            log.display()
        ),
    );
    // SAFETY: loading the module under test; it stays loaded until the
    // process ends (the function list is 'static).
    let lib = Box::leak(Box::new(
        unsafe { cryptoki_sys::Pkcs11::new(module_path()) }.unwrap(),
    ));
    // SAFETY: every pointer below points to a live local.
    let ctx = unsafe {
        let mut fl: *mut CK_FUNCTION_LIST = null_mut();
        assert_eq!(lib.C_GetFunctionList(&mut fl), CKR_OK);
        let f: &'static CK_FUNCTION_LIST = &*fl;
        let mut args: CK_C_INITIALIZE_ARGS = std::mem::zeroed();
        args.flags = CKF_OS_LOCKING_OK;
        assert_eq!(
            f.C_Initialize.unwrap()(&mut args as *mut _ as *mut _),
            CKR_OK
        );
        let mut slot: CK_SLOT_ID = 0;
        let mut n: CK_ULONG = 1;
        assert_eq!(f.C_GetSlotList.unwrap()(CK_TRUE, &mut slot, &mut n), CKR_OK);
        assert_eq!(n, 1);
        let mut session: CK_SESSION_HANDLE = 0;
        assert_eq!(
            f.C_OpenSession.unwrap()(
                slot,
                CKF_SERIAL_SESSION | CKF_RW_SESSION,
                null_mut(),
                None,
                &mut session
            ),
            CKR_OK
        );
        // The cluster key "k" that the server lists.
        let mut label = *b"k";
        let mut t = [raw_attr(CKA_LABEL, &mut label)];
        assert_eq!(
            f.C_FindObjectsInit.unwrap()(session, t.as_mut_ptr(), 1),
            CKR_OK
        );
        let mut key: CK_OBJECT_HANDLE = 0;
        let mut found: CK_ULONG = 0;
        assert_eq!(
            f.C_FindObjects.unwrap()(session, &mut key, 1, &mut found),
            CKR_OK
        );
        assert_eq!(found, 1, "the key the server lists");
        assert_eq!(f.C_FindObjectsFinal.unwrap()(session), CKR_OK);
        // A session key of 16 bytes, to wrap under the cluster key.
        let mut keygen = CK_MECHANISM {
            mechanism: CKM_AES_KEY_GEN,
            pParameter: null_mut(),
            ulParameterLen: 0,
        };
        let mut value_len: CK_ULONG = 16;
        let mut no: CK_BBOOL = CK_FALSE;
        let mut yes: CK_BBOOL = CK_TRUE;
        let mut kt = [
            raw_attr(CKA_VALUE_LEN, &mut value_len),
            raw_attr(CKA_TOKEN, &mut no),
            raw_attr(CKA_EXTRACTABLE, &mut yes),
        ];
        let mut session_key: CK_OBJECT_HANDLE = 0;
        assert_eq!(
            f.C_GenerateKey.unwrap()(session, &mut keygen, kt.as_mut_ptr(), 3, &mut session_key),
            CKR_OK
        );
        Ctx {
            f,
            session,
            key,
            session_key,
        }
    };

    let ops = [Op::Encrypt, Op::Decrypt, Op::Sign, Op::Wrap];
    let mut errors = 0;
    for round in 0..3 {
        for mode in MODES.iter().copied().chain([Mode::Honest]) {
            switch.set(mode);
            for op in ops {
                let mut g = Guarded::new();
                let (rv, len) = ctx.run(op, &mut g);
                let at = format!("round {round}, {mode:?}, {op:?}: rv {rv:#x}, length {len}");
                assert!(g.canaries_intact(), "{at}: a canary was overwritten");
                if mode == Mode::Honest {
                    let n = op.honest_len();
                    assert_eq!((rv, len as usize), (CKR_OK, n), "{at}");
                    assert!(g.middle()[..n].iter().all(|b| *b == OUTPUT), "{at}");
                    assert!(g.middle()[n..].iter().all(|b| *b == FILL), "{at}");
                    continue;
                }
                match (op, mode) {
                    // A decryption not longer than its input is all a module
                    // can check (docs/pkcs11.md): one byte more or less is
                    // passed on, and fits the buffer.
                    (Op::Decrypt, Mode::OneMore | Mode::OneLess) => {
                        let n = if mode == Mode::OneMore {
                            op.honest_len() + 1
                        } else {
                            op.honest_len() - 1
                        };
                        assert_eq!((rv, len as usize), (CKR_OK, n), "{at}");
                        assert!(g.middle()[..n].iter().all(|b| *b == OUTPUT), "{at}");
                        assert!(g.middle()[n..].iter().all(|b| *b == FILL), "{at}");
                    }
                    // Every other wrong answer is CKR_DEVICE_ERROR, and the
                    // caller's buffer is not written to.
                    _ => {
                        assert_eq!(rv, CKR_DEVICE_ERROR, "{at}");
                        assert!(g.untouched(), "{at}: written to with an error");
                        errors += 1;
                    }
                }
            }
        }
    }
    // 3 rounds of 11 hostile modes by 4 operations, but the 2 passed-on
    // decryptions.
    assert_eq!(errors, 3 * (11 * 4 - 2), "errors");
    // The checks said why, at error level.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("KEY:RAWENCRYPT: the cluster answered 1048576 bytes"),
        "{text}"
    );
    assert!(
        text.contains("KEY:MAC: the cluster answered 1048576 bytes"),
        "{text}"
    );
    assert!(!text.contains("panic"), "{text}");
    // SAFETY: no pointer arguments.
    unsafe {
        assert_eq!(ctx.f.C_CloseSession.unwrap()(ctx.session), CKR_OK);
        assert_eq!(ctx.f.C_Finalize.unwrap()(null_mut()), CKR_OK);
    }
}
