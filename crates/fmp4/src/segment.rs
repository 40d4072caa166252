//! CMAF media segments: `styp` + `moof` + `mdat`, built into one exact-size allocation.

use bytes::{BufMut, Bytes};
use tidegate_media::{AudioConfig, Frame, TrackKind, TrackRun, TIMESCALE};

use crate::writer::BoxWriter;
use crate::{Fmp4Error, AUDIO_TRACK_ID, VIDEO_TRACK_ID};

/// Largest media segment written, in bytes. Far beyond any live segment (a 2 s segment at
/// 100 Mbit/s is 25 MB); it keeps every offset within the signed 32-bit `trun.data_offset`.
pub const MAX_MEDIA_SEGMENT_LEN: usize = 1 << 30;

/// Most frames in one run (a 60 s segment of 120 fps video is 7200).
pub const MAX_SAMPLES_PER_RUN: usize = 1 << 20;

/// `styp` brands: major `msdh`, then the compatible brands.
const STYP_MAJOR: &[u8; 4] = b"msdh";
const STYP_COMPATIBLE: [&[u8; 4]; 3] = [b"msdh", b"cmfs", b"cmff"];
const STYP_LEN: usize = 8 + 8 + 4 * STYP_COMPATIBLE.len();

/// `tfhd` flags: default-base-is-moof.
const TFHD_DEFAULT_BASE_IS_MOOF: u32 = 0x02_0000;
/// `trun` flags: data-offset, sample-duration, sample-size, sample-flags present.
const TRUN_FLAGS_AUDIO: u32 = 0x00_0701;
/// `trun` flags: as audio plus sample-composition-time-offset.
const TRUN_FLAGS_VIDEO: u32 = 0x00_0f01;

/// Sample flags of a sync sample: sample_depends_on = 2 (depends on no other sample).
pub const SAMPLE_FLAGS_SYNC: u32 = 0x0200_0000;
/// Sample flags of a non-sync sample: sample_depends_on = 1, sample_is_non_sync_sample.
pub const SAMPLE_FLAGS_NON_SYNC: u32 = 0x0101_0000;

/// Box sizes of the fixed parts.
const MFHD_LEN: usize = 16;
const TFHD_LEN: usize = 16;
const TFDT_LEN: usize = 20;
const TRUN_HEADER_LEN: usize = 20; // header, version/flags, sample_count, data_offset

/// One run, validated, with what its `traf` needs.
struct RunPlan<'a> {
    track_id: u32,
    frames: &'a [Frame],
    end_dts: i64,
    /// Track timescale in Hz.
    timescale: u32,
    video: bool,
    payload_len: usize,
}

impl RunPlan<'_> {
    fn per_sample_len(&self) -> usize {
        if self.video {
            16
        } else {
            12
        }
    }

    fn traf_len(&self) -> usize {
        8 + TFHD_LEN
            + TFDT_LEN
            + TRUN_HEADER_LEN
            + self.frames.len().saturating_mul(self.per_sample_len())
    }
}

/// Converts a [`TIMESCALE`] time to `timescale`, rounding half up. Every sample time goes
/// through this one function, so a frame's time is the same whichever segment computes it
/// and consecutive segments tile exactly.
pub fn to_timescale(ticks: i64, timescale: u32) -> Result<i64, Fmp4Error> {
    if timescale == TIMESCALE {
        return Ok(ticks);
    }
    let half = i128::from(TIMESCALE / 2);
    let scaled =
        (i128::from(ticks) * i128::from(timescale) + half).div_euclid(i128::from(TIMESCALE));
    i64::try_from(scaled).map_err(|_| Fmp4Error::Timestamp {
        what: "decode time beyond 64 bits",
    })
}

/// See [`crate::media_segment`].
pub(crate) fn media_segment(
    sequence_number: u32,
    runs: &[TrackRun<'_>],
    audio: Option<&AudioConfig>,
) -> Result<Bytes, Fmp4Error> {
    media_fragment(sequence_number, runs, audio, true)
}

/// See [`crate::media_chunk`]: a media segment without `styp` when `with_styp` is false.
pub(crate) fn media_fragment(
    sequence_number: u32,
    runs: &[TrackRun<'_>],
    audio: Option<&AudioConfig>,
    with_styp: bool,
) -> Result<Bytes, Fmp4Error> {
    let styp_len = if with_styp { STYP_LEN } else { 0 };
    let mut plans: Vec<RunPlan<'_>> = Vec::with_capacity(runs.len());
    for run in runs {
        if run.frames.is_empty() {
            continue;
        }
        if plans
            .iter()
            .any(|p| p.video == (run.track == TrackKind::Video))
        {
            return Err(Fmp4Error::DuplicateTrack(run.track));
        }
        if run.frames.len() > MAX_SAMPLES_PER_RUN {
            return Err(Fmp4Error::LimitExceeded {
                what: "samples in one run",
                limit: MAX_SAMPLES_PER_RUN as u64,
            });
        }
        let (track_id, timescale, video) = match run.track {
            TrackKind::Video => (VIDEO_TRACK_ID, TIMESCALE, true),
            TrackKind::Audio => {
                let rate = audio.ok_or(Fmp4Error::MissingAudioConfig)?.sample_rate;
                if rate == 0 {
                    return Err(Fmp4Error::Config {
                        what: "audio sample rate",
                    });
                }
                (AUDIO_TRACK_ID, rate, false)
            }
        };
        let payload_len = run
            .frames
            .iter()
            .try_fold(0usize, |acc, f| acc.checked_add(f.data.len()))
            .filter(|l| *l <= MAX_MEDIA_SEGMENT_LEN)
            .ok_or(too_large())?;
        plans.push(RunPlan {
            track_id,
            frames: run.frames,
            end_dts: run.end_dts,
            timescale,
            video,
            payload_len,
        });
    }
    let moof_len = plans
        .iter()
        .try_fold(8 + MFHD_LEN, |acc, p| acc.checked_add(p.traf_len()))
        .ok_or(too_large())?;
    let mdat_len = plans
        .iter()
        .try_fold(8usize, |acc, p| acc.checked_add(p.payload_len))
        .ok_or(too_large())?;
    let total = styp_len
        .checked_add(moof_len)
        .and_then(|l| l.checked_add(mdat_len))
        .filter(|l| *l <= MAX_MEDIA_SEGMENT_LEN)
        .ok_or(too_large())?;

    let mut w = BoxWriter::with_capacity(total);
    if with_styp {
        styp(&mut w)?;
    }
    let moof = w.open(b"moof");
    w.full_leaf(b"mfhd", 0, 0, &sequence_number.to_be_bytes())?;
    // Offsets are relative to the start of `moof` (default-base-is-moof); the first sample
    // of the first run sits right after the `mdat` header.
    let mut data_offset = moof_len + 8;
    for plan in &plans {
        traf(&mut w, plan, data_offset)?;
        data_offset += plan.payload_len;
    }
    w.close(moof)?;
    let mdat = w.open(b"mdat");
    for plan in &plans {
        for frame in plan.frames {
            w.buf.put_slice(&frame.data);
        }
    }
    w.close(mdat)?;
    debug_assert_eq!(w.buf.len(), total);
    Ok(w.buf.freeze())
}

fn too_large() -> Fmp4Error {
    Fmp4Error::LimitExceeded {
        what: "media segment bytes",
        limit: MAX_MEDIA_SEGMENT_LEN as u64,
    }
}

pub(crate) fn styp(w: &mut BoxWriter) -> Result<(), Fmp4Error> {
    let b = w.open(b"styp");
    w.buf.put_slice(STYP_MAJOR);
    w.buf.put_u32(0);
    for brand in STYP_COMPATIBLE {
        w.buf.put_slice(brand);
    }
    w.close(b)
}

/// Writes one `traf` (tfhd, tfdt, trun) for `plan`, whose first sample is `data_offset`
/// bytes after the start of `moof`.
fn traf(w: &mut BoxWriter, plan: &RunPlan<'_>, data_offset: usize) -> Result<(), Fmp4Error> {
    let first = plan
        .frames
        .first()
        .ok_or(Fmp4Error::Timestamp { what: "empty run" })?;
    let base = to_timescale(first.dts, plan.timescale)?;
    let base = u64::try_from(base).map_err(|_| Fmp4Error::Timestamp {
        what: "negative decode time",
    })?;
    let data_offset = i32::try_from(data_offset).map_err(|_| too_large())?;
    let sample_count = u32::try_from(plan.frames.len()).map_err(|_| Fmp4Error::LimitExceeded {
        what: "samples in one run",
        limit: MAX_SAMPLES_PER_RUN as u64,
    })?;

    let traf = w.open(b"traf");
    w.full_leaf(
        b"tfhd",
        0,
        TFHD_DEFAULT_BASE_IS_MOOF,
        &plan.track_id.to_be_bytes(),
    )?;
    w.full_leaf(b"tfdt", 1, 0, &base.to_be_bytes())?;
    let (version, flags) = if plan.video {
        (1, TRUN_FLAGS_VIDEO)
    } else {
        (0, TRUN_FLAGS_AUDIO)
    };
    let trun = w.open_full(b"trun", version, flags);
    w.buf.put_u32(sample_count);
    w.buf.put_i32(data_offset);
    let mut time = to_timescale(first.dts, plan.timescale)?;
    for (i, frame) in plan.frames.iter().enumerate() {
        let next_dts = plan.frames.get(i + 1).map_or(plan.end_dts, |next| next.dts);
        let next_time = to_timescale(next_dts, plan.timescale)?;
        let duration = next_time
            .checked_sub(time)
            .and_then(|d| u32::try_from(d).ok())
            .ok_or(Fmp4Error::Timestamp {
                what: "sample duration (decode times out of order or too far apart)",
            })?;
        let size = u32::try_from(frame.data.len()).map_err(|_| too_large())?;
        w.buf.put_u32(duration);
        w.buf.put_u32(size);
        w.buf.put_u32(if frame.keyframe || !plan.video {
            SAMPLE_FLAGS_SYNC
        } else {
            SAMPLE_FLAGS_NON_SYNC
        });
        if plan.video {
            let offset = frame
                .pts
                .checked_sub(frame.dts)
                .and_then(|o| i32::try_from(o).ok())
                .ok_or(Fmp4Error::Timestamp {
                    what: "composition offset beyond 32 bits",
                })?;
            w.buf.put_i32(offset);
        }
        time = next_time;
    }
    w.close(trun)?;
    w.close(traf)
}
