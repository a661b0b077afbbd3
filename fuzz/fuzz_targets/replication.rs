//! Replication messages as a peer's connection delivers them: `u32` BE
//! length-prefixed frames, each decoded as the transport does, then handed
//! to a protocol core the way the driver does (messages stepped in,
//! snapshot records parsed into a state), with ticks in between. Also the
//! stored log entries and records (mode byte 1). A peer is authenticated by
//! mutual TLS, but a bug or a bad disk on its side must not crash this
//! node: errors, never panics.
#![no_main]

use kms_node::change::Change;
use kms_node::replication::core::{Config, Core, Durable};
use kms_node::replication::net::Wire;
use kms_node::{codec, store};
use libfuzzer_sys::fuzz_target;

fn records(r: &[(Vec<u8>, Vec<u8>)]) {
    let mut sorted: Vec<(&[u8], &[u8])> = r
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    sorted.sort();
    let _ = store::import_records(sorted.into_iter());
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut b)) = data.split_first() else {
        return;
    };
    if mode == 1 {
        let _ = codec::decode::<store::Entry>(b);
        if let Ok(r) = codec::decode::<Vec<(Vec<u8>, Vec<u8>)>>(b) {
            records(&r);
        }
        return;
    }
    let mut core: Core<Change> = Core::new(1, vec![1, 2, 3], Config::default(), Durable::default());
    for n in 0..64u32 {
        if b.len() < 4 {
            break;
        }
        let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        b = &b[4..];
        let frame = &b[..len.min(b.len())];
        b = &b[frame.len()..];
        let from = 2 + n % 2;
        match codec::decode_wire::<Wire>(frame) {
            Ok(Wire::Raft(msg)) => {
                let _ = core.step(from, msg);
            }
            Ok(Wire::Snapshot(msg, r)) => {
                records(&r.0);
                let _ = core.step(from, msg);
            }
            Ok(_) | Err(_) => {}
        }
        if mode & 2 != 0 {
            let _ = core.tick();
        }
    }
});
