//! A fuzz-style property test: random sequences of PKCS#11 calls with
//! random arguments, through the exported C functions in-process, against a
//! configuration whose only server is unreachable (so cluster calls fail
//! with `CKR_DEVICE_ERROR` and session keys work locally), named by
//! `KMS_PKCS11_CONFIG`. Every call must return a defined `CK_RV`, never
//! `CKR_GENERAL_ERROR` (what a caught panic becomes) but for a
//! `C_Initialize` without a configuration, and the module must keep working
//! afterwards. A `C_Initialize` with a non-NULL `pReserved` (garbage
//! pointers) must be `CKR_ARGUMENTS_BAD` and never read it.
//!
//! One test function: the module is a process-wide singleton.
#![allow(unsafe_code)]

use std::path::{Path, PathBuf};
use std::ptr::null_mut;

use cryptoki_sys::*;
use kms_pkcs11::ffi::*;
use proptest::prelude::*;

/// How often the deep states were reached (a guard against a fuzz test
/// that only ever sees CKR_CRYPTOKI_NOT_INITIALIZED).
static REACHED: [std::sync::atomic::AtomicUsize; 3] = [
    std::sync::atomic::AtomicUsize::new(0),
    std::sync::atomic::AtomicUsize::new(0),
    std::sync::atomic::AtomicUsize::new(0),
];

mod calls;
use calls::*;

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn call() -> impl Strategy<Value = Call> {
    prop_oneof![
        2 => Just(Call::Initialize),
        1 => Just(Call::InitializeNull),
        1 => any::<u8>().prop_map(Call::InitializeReserved),
        1 => Just(Call::Finalize),
        1 => any::<bool>().prop_map(Call::SlotList),
        3 => (any::<u8>(), any::<bool>()).prop_map(|(a, b)| Call::OpenSession(a, b)),
        1 => any::<u8>().prop_map(Call::CloseSession),
        1 => (any::<u8>(), any::<u8>(), bytes(8)).prop_map(|(a, b, c)| Call::Login(a, b, c)),
        1 => any::<u8>().prop_map(Call::Logout),
        3 => (any::<u8>(), any::<bool>(), any::<u8>()).prop_map(|(a, b, c)| Call::GenerateKey(a, b, c)),
        2 => (any::<u8>(), prop::collection::vec((any::<u8>(), bytes(40)), 0..6))
            .prop_map(|(a, b)| Call::CreateObject(a, b)),
        2 => (any::<u8>(), prop::collection::vec((any::<u8>(), bytes(10)), 0..3), any::<u8>())
            .prop_map(|(a, b, c)| Call::Find(a, b, c)),
        2 => (any::<u8>(), any::<u8>(), prop::collection::vec((any::<u8>(), any::<Option<u8>>()), 0..5))
            .prop_map(|(a, b, c)| Call::GetAttributes(a, b, c)),
        4 => (any::<u8>(), any::<u8>(), any::<u8>(), any::<bool>())
            .prop_map(|(a, b, c, d)| Call::CryptInit(a, b, c, d)),
        3 => (any::<u8>(), bytes(70), any::<Option<u8>>(), any::<bool>())
            .prop_map(|(a, b, c, d)| Call::Crypt(a, b, c, d)),
        2 => (any::<u8>(), bytes(40), any::<bool>()).prop_map(|(a, b, c)| Call::Update(a, b, c)),
        2 => (any::<u8>(), any::<Option<u8>>(), any::<bool>()).prop_map(|(a, b, c)| Call::Final(a, b, c)),
        2 => (any::<u8>(), any::<u8>(), bytes(40)).prop_map(|(a, b, c)| Call::Sign(a, b, c)),
        1 => (any::<u8>(), any::<u8>(), bytes(40), bytes(40)).prop_map(|(a, b, c, d)| Call::Verify(a, b, c, d)),
        1 => (any::<u8>(), bytes(40), any::<Option<u8>>()).prop_map(|(a, b, c)| Call::Digest(a, b, c)),
        2 => (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>(), any::<Option<u8>>())
            .prop_map(|(a, b, c, d, e)| Call::Wrap(a, b, c, d, e)),
        2 => (any::<u8>(), any::<u8>(), any::<u8>(), bytes(48)).prop_map(|(a, b, c, d)| Call::Unwrap(a, b, c, d)),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Call::Destroy(a, b)),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Call::Random(a, b)),
        1 => (any::<u8>(), any::<u8>(), any::<bool>()).prop_map(|(a, b, c)| Call::GenerateKeyPair(a, b, c)),
        2 => (any::<u8>(), any::<u8>(), any::<u8>(), bytes(70), any::<Option<u8>>())
            .prop_map(|(a, b, c, d, e)| Call::SignAsym(a, b, c, d, e)),
    ]
}

/// The module is one per process: the tests of this file take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A configuration whose only server is unreachable.
fn dead_config(dir: &Path) -> PathBuf {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = dir.join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "servers = [\"127.0.0.1:{port}\"]\napi_key = \"k1:d7cY_5k8HbBGkZpoy2hGmvkxg83QDBXsA_nFXDfTk2E\"\ninsecure = true\nenclaves = [\"a\", \"b\"]\ntimeout_ms = 500\nlog_level = \"off\"\n"
        ),
    )
    .unwrap();
    cfg
}

/// Random calls from four threads at once on one initialized module (no
/// C_Initialize or C_Finalize among them): no crash, no deadlock (a
/// watchdog aborts the process after 120 s), no CKR_GENERAL_ERROR.
#[test]
fn concurrent_random_calls_never_crash() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let config = dead_config(dir.path());
    let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f2 = finished.clone();
    std::thread::spawn(move || {
        // A watchdog, not synchronization: 1200 ticks of 100 ms = 120 s.
        for _ in 0..1200 {
            std::thread::sleep(std::time::Duration::from_millis(100));
            if f2.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
        }
        eprintln!("concurrent_random_calls_never_crash: deadlock, aborting");
        std::process::abort();
    });
    let mut w0 = World {
        config: config.clone(),
        slots: vec![],
        sessions: vec![],
        objects: vec![],
    };
    assert_eq!(step(&mut w0, &Call::Initialize), CKR_OK);
    let slots = w0.slots.clone();
    std::thread::scope(|sc| {
        for t in 0..4u64 {
            let (config, slots) = (config.clone(), slots.clone());
            sc.spawn(move || {
                let mut seed = [0u8; 32];
                seed[0] = t as u8;
                let mut runner = TestRunner::new_with_rng(
                    ProptestConfig::default(),
                    proptest::test_runner::TestRng::from_seed(
                        proptest::test_runner::RngAlgorithm::ChaCha,
                        &seed,
                    ),
                );
                let mut w = World {
                    config,
                    slots,
                    sessions: vec![],
                    objects: vec![],
                };
                for c in [
                    Call::OpenSession(0, true),
                    Call::GenerateKey(0, false, 2),
                    Call::OpenSession(1, false),
                ] {
                    step(&mut w, &c);
                }
                for i in 0..400u64 {
                    let c = call().new_tree(&mut runner).unwrap().current();
                    if matches!(
                        c,
                        Call::Initialize
                            | Call::InitializeNull
                            | Call::InitializeReserved(_)
                            | Call::Finalize
                    ) {
                        continue;
                    }
                    let rv = step(&mut w, &c);
                    assert_ne!(rv, CKR_GENERAL_ERROR, "thread {t}, call {i}: {c:?}");
                }
            });
        }
    });
    // SAFETY: no pointer arguments.
    assert_eq!(unsafe { C_Finalize(null_mut()) }, CKR_OK);
    finished.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// The slot ids of enclaves `a` and `b` (the configuration of
/// [`dead_config`]), in name order: FNV-1a of the name, 31 bits
/// (docs/pkcs11.md), computed by hand -- FNV-1a("a") = 0xe40c292c,
/// FNV-1a("b") = 0xe70c2de5.
const SLOTS_A_B: [CK_SLOT_ID; 2] = [0x640c_292c, 0x670c_2de5];

/// Slot ids are the documented fixed values, not just stable ones, and
/// each token's serial number is its slot id in hex.
#[test]
fn slot_ids_are_fnv1a_of_the_enclave_names() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let config = dead_config(dir.path());
    std::env::set_var("KMS_PKCS11_CONFIG", &config);
    // SAFETY: valid pointers to locals.
    unsafe {
        let mut a: CK_C_INITIALIZE_ARGS = std::mem::zeroed();
        a.flags = CKF_OS_LOCKING_OK;
        assert_eq!(C_Initialize(&mut a as *mut _ as *mut _), CKR_OK);
        let mut n: CK_ULONG = 0;
        assert_eq!(C_GetSlotList(1, null_mut(), &mut n), CKR_OK);
        assert_eq!(n, 2);
        let mut slots = [0; 2];
        assert_eq!(C_GetSlotList(1, slots.as_mut_ptr(), &mut n), CKR_OK);
        assert_eq!(slots, SLOTS_A_B);
        for (slot, label) in SLOTS_A_B.iter().zip(["a", "b"]) {
            let mut ti: CK_TOKEN_INFO = std::mem::zeroed();
            assert_eq!(C_GetTokenInfo(*slot, &mut ti), CKR_OK);
            let text = |b: &[u8]| String::from_utf8_lossy(b).trim_end().to_string();
            assert_eq!(text(&ti.label), label);
            assert_eq!(text(&ti.serialNumber), format!("{slot:016x}"));
        }
        assert_eq!(C_Finalize(null_mut()), CKR_OK);
    }
}

#[test]
fn random_call_sequences_never_crash() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    // Without a configuration in the environment, a NULL-argument
    // C_Initialize reads KMS_* variables: make sure they are unusable.
    std::env::remove_var("KMS_PKCS11_CONFIG");
    std::env::remove_var("KMS_API_KEY");
    std::env::remove_var("MINIO_KMS_API_KEY");
    let config = dead_config(dir.path());
    let runner_cfg = ProptestConfig {
        cases: 96,
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    };
    proptest!(runner_cfg, |(calls in prop::collection::vec(call(), 1..40))| {
        let mut w = World { config: config.clone(), slots: vec![], sessions: vec![], objects: vec![] };
        // Most sequences start from an initialized module with a session
        // and a session AES key, so that the random calls reach deep states.
        let prelude = if calls.len() % 4 == 0 {
            vec![]
        } else {
            vec![Call::Initialize, Call::OpenSession(0, true), Call::GenerateKey(0, false, 2), Call::GenerateKey(0, false, 1)]
        };
        for c in prelude.iter().chain(&calls) {
            let rv = step(&mut w, c);
            if rv == CKR_OK {
                let i = match c {
                    Call::OpenSession(..) => 0,
                    Call::GenerateKey(..) | Call::CreateObject(..) | Call::Unwrap(..) => 1,
                    Call::Crypt(..) | Call::Final(..) | Call::Sign(..) | Call::Wrap(..) => 2,
                    _ => 3,
                };
                if i < 3 {
                    REACHED[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            let env_init = matches!(c, Call::InitializeNull);
            prop_assert!(
                rv != CKR_GENERAL_ERROR || env_init,
                "{c:?} returned CKR_GENERAL_ERROR (a panic?) in {calls:?}"
            );
            if matches!(c, Call::InitializeReserved(_)) {
                prop_assert_eq!(rv, CKR_ARGUMENTS_BAD, "{:?} in {:?}", c, calls);
            }
        }
        // The module still works: finalize, initialize, use a session key.
        // SAFETY: valid pointers to locals.
        unsafe {
            // Initialized or not, depending on the sequence.
            let rv = C_Finalize(null_mut());
            prop_assert!(
                rv == CKR_OK || rv == CKR_CRYPTOKI_NOT_INITIALIZED,
                "C_Finalize after {:?}: {:#x}", calls, rv
            );
            std::env::set_var("KMS_PKCS11_CONFIG", &config);
            let mut a: CK_C_INITIALIZE_ARGS = std::mem::zeroed();
            prop_assert_eq!(C_Initialize(&mut a as *mut _ as *mut _), CKR_OK);
            let mut n: CK_ULONG = 0;
            prop_assert_eq!(C_GetSlotList(1, null_mut(), &mut n), CKR_OK);
            prop_assert_eq!(n, 2);
            let mut slots = [0; 2];
            prop_assert_eq!(C_GetSlotList(1, slots.as_mut_ptr(), &mut n), CKR_OK);
            prop_assert_eq!(slots, SLOTS_A_B);
            let mut h = 0;
            prop_assert_eq!(C_OpenSession(slots[0], CKF_SERIAL_SESSION, null_mut(), None, &mut h), CKR_OK);
            let mut out = [0u8; 8];
            prop_assert_eq!(C_GenerateRandom(h, out.as_mut_ptr(), 8), CKR_OK);
            prop_assert_eq!(C_Finalize(null_mut()), CKR_OK);
        }
    });
    let reached: Vec<usize> = REACHED
        .iter()
        .map(|r| r.load(std::sync::atomic::Ordering::Relaxed))
        .collect();
    eprintln!(
        "successful calls: open session {}, make key {}, crypto {}",
        reached[0], reached[1], reached[2]
    );
    assert!(
        reached.iter().all(|n| *n > 0),
        "deep states never reached: {reached:?}"
    );
}
