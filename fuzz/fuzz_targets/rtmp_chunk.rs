#![no_main]
//! The chunk reader on arbitrary bytes (as after a valid handshake), honouring Set Chunk Size
//! and Abort like the session does.
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tidegate_rtmp::chunk::{message_type, ChunkReader};

fuzz_target!(|data: &[u8]| {
    let mut reader = ChunkReader::new();
    let mut buf = BytesMut::from(data);
    while let Ok(Some(msg)) = reader.read(&mut buf) {
        let value = msg
            .payload
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        match (msg.type_id, value) {
            (message_type::SET_CHUNK_SIZE, Some(v)) => {
                if reader.set_chunk_size(v).is_err() {
                    break;
                }
            }
            (message_type::ABORT, Some(v)) => reader.abort(v),
            _ => {}
        }
    }
});
