//! The .npy reader on arbitrary bytes: an error or an array whose data matches its shape,
//! never a panic, an abort or an allocation the bytes do not justify.
#![no_main]

use std::io::BufReader;

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../cli/src/commands/npy.rs"]
mod npy;

fuzz_target!(|data: &[u8]| {
    let len = data.len() as u64;
    if let Ok(a) = npy::parse_f32("fuzz.npy", BufReader::new(data), len) {
        assert_eq!(a.shape.iter().product::<usize>(), a.data.len());
    }
    if let Ok(a) = npy::parse_floats("fuzz.npy", BufReader::new(data), len, true) {
        assert_eq!(a.shape.iter().product::<usize>(), a.data.len());
    }
    match npy::parse_targets("fuzz.npy", BufReader::new(data), len, false) {
        Ok(npy::Targets::Classes(a)) => assert_eq!(a.shape.iter().product::<usize>(), a.data.len()),
        Ok(npy::Targets::Floats(a)) => assert_eq!(a.shape.iter().product::<usize>(), a.data.len()),
        Err(_) => {}
    }
});
