//! Prometheus's XOR chunks, as remote read's chunked answers carry them.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some(samples) = promflow_storage::decode_xor_chunk(data) {
        // what decodes re-encodes to the same samples
        if !samples.is_empty() && samples.len() <= u16::MAX as usize {
            let again = promflow_storage::encode_xor_chunk(samples.iter().copied());
            let back = promflow_storage::decode_xor_chunk(&again).expect("a chunk promflow wrote decodes");
            assert_eq!(back.len(), samples.len());
        }
    }
});
