//! Prometheus's XOR, integer histogram and float histogram chunks, as remote read's chunked
//! answers carry them.
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
    // an endpoint's histogram chunks decode or are refused, never a crash or a huge allocation
    let _ = promflow_storage::decode_integer_histogram_chunk(data);
    if let Some(samples) = promflow_storage::decode_float_histogram_chunk(data) {
        // what decodes re-encodes into chunks that decode to as many samples (timestamps in
        // order, as a series' are)
        if samples.windows(2).all(|w| w[0].t < w[1].t) {
            let chunks = promflow_storage::encode_float_histogram_chunks(&samples);
            let back: usize = chunks
                .iter()
                .map(|c| {
                    promflow_storage::decode_float_histogram_chunk(&c.data)
                        .expect("a chunk promflow wrote")
                        .len()
                })
                .sum();
            assert_eq!(back, samples.len());
        }
    }
});
