//! Timestamp unwrapping (RTMP's 32-bit milliseconds, MPEG-TS's 33-bit 90 kHz) and jump
//! detection. (Being written.)
