//! Private stand-ins with the muxers' agreed signatures, used until the real
//! `tidegate-fmp4` / `tidegate-mpegts` APIs land. Removed once they do.
#![allow(dead_code, missing_docs)]

pub mod tidegate_fmp4 {
    use bytes::Bytes;
    use tidegate_media::{AudioConfig, TrackRun, VideoConfig};

    #[derive(Debug, thiserror::Error)]
    #[error("fmp4 stub")]
    pub struct Fmp4Error;

    pub fn init_segment(
        _video: Option<&VideoConfig>,
        _audio: Option<&AudioConfig>,
    ) -> Result<Bytes, Fmp4Error> {
        Ok(Bytes::from_static(b"init"))
    }

    pub fn media_segment(
        _sequence_number: u32,
        _runs: &[TrackRun<'_>],
    ) -> Result<Bytes, Fmp4Error> {
        Ok(Bytes::from_static(b"moof"))
    }
}

pub mod tidegate_mpegts {
    use bytes::Bytes;
    use tidegate_media::{AudioConfig, TrackRun, VideoConfig};

    #[derive(Debug, thiserror::Error)]
    #[error("ts stub")]
    pub struct TsError;

    pub struct TsMuxer;

    impl TsMuxer {
        pub fn new(
            _video: Option<&VideoConfig>,
            _audio: Option<&AudioConfig>,
        ) -> Result<TsMuxer, TsError> {
            Ok(TsMuxer)
        }
        pub fn segment(&mut self, _runs: &[TrackRun<'_>]) -> Result<Bytes, TsError> {
            Ok(Bytes::from_static(b"ts"))
        }
    }
}
