//! The seam between the segmenter's cutting logic and the container muxers, so the cutting
//! logic can be tested with a transparent fake muxer.

use bytes::Bytes;
use tidegate_media::{AudioConfig, TrackRun, VideoConfig};

use crate::{Container, PackagerError};

/// A container muxer as the segmenter drives it: `configure` whenever the track
/// configuration differs from the last one (always before the first `segment`), then
/// `segment` once per cut segment.
pub(crate) trait Muxer: Send {
    /// Takes a new track configuration; returns the init segment the following segments
    /// need, if the container has one.
    fn configure(
        &mut self,
        video: Option<&VideoConfig>,
        audio: Option<&AudioConfig>,
    ) -> Result<Option<Bytes>, PackagerError>;

    /// Muxes one segment. `sequence` counts segments of this session from 1 (wrapping).
    fn segment(&mut self, sequence: u32, runs: &[TrackRun<'_>]) -> Result<Bytes, PackagerError>;

    /// Muxes one chunk of a segment (an LL-HLS part), the segment's header (`styp`) in
    /// front when `first`. `sequence` counts chunks. By default a chunk is a segment.
    fn chunk(
        &mut self,
        sequence: u32,
        runs: &[TrackRun<'_>],
        first: bool,
    ) -> Result<Bytes, PackagerError> {
        let _ = first;
        self.segment(sequence, runs)
    }
}

/// The muxer for a container.
pub(crate) fn for_container(container: Container) -> Box<dyn Muxer> {
    match container {
        Container::Fmp4 => Box::new(Fmp4Muxer { audio: None }),
        Container::MpegTs => Box::new(TsMuxer { inner: None }),
    }
}

/// CMAF: an init segment per configuration, `moof`+`mdat` per segment.
struct Fmp4Muxer {
    /// The audio configuration of the last init segment (it gives the audio timescale).
    audio: Option<AudioConfig>,
}

impl Muxer for Fmp4Muxer {
    fn configure(
        &mut self,
        video: Option<&VideoConfig>,
        audio: Option<&AudioConfig>,
    ) -> Result<Option<Bytes>, PackagerError> {
        let init = tidegate_fmp4::init_segment(video, audio)?;
        self.audio = audio.cloned();
        Ok(Some(init))
    }

    fn segment(&mut self, sequence: u32, runs: &[TrackRun<'_>]) -> Result<Bytes, PackagerError> {
        Ok(tidegate_fmp4::media_segment(
            sequence,
            runs,
            self.audio.as_ref(),
        )?)
    }

    fn chunk(
        &mut self,
        sequence: u32,
        runs: &[TrackRun<'_>],
        first: bool,
    ) -> Result<Bytes, PackagerError> {
        Ok(tidegate_fmp4::media_chunk(
            sequence,
            runs,
            self.audio.as_ref(),
            first,
        )?)
    }
}

/// MPEG-TS: self-contained segments (PAT/PMT in each), continuity counters kept across
/// segments of one configuration.
struct TsMuxer {
    inner: Option<tidegate_mpegts::TsMuxer>,
}

impl Muxer for TsMuxer {
    fn configure(
        &mut self,
        video: Option<&VideoConfig>,
        audio: Option<&AudioConfig>,
    ) -> Result<Option<Bytes>, PackagerError> {
        self.inner = None;
        self.inner = Some(tidegate_mpegts::TsMuxer::new(video, audio)?);
        Ok(None)
    }

    fn segment(&mut self, _sequence: u32, runs: &[TrackRun<'_>]) -> Result<Bytes, PackagerError> {
        match self.inner.as_mut() {
            Some(muxer) => Ok(muxer.segment(runs)?),
            None => Err(PackagerError::MuxerNotConfigured),
        }
    }
}
