//! Every codec configuration parser, the ADTS header parser/builder and the NAL/OBU helpers
//! on arbitrary bytes.
#![no_main]
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use tidegate_media::codec::{
    av1_strip_temporal_delimiters, avc_record_from_parameter_sets, hevc_record_from_parameter_sets,
    parameter_sets, parse_aac_asc, parse_av1_record, parse_avc_record, parse_hevc_record,
};
use tidegate_media::{adts, nal};

fuzz_target!(|data: &[u8]| {
    let input = Bytes::copy_from_slice(data);
    for parsed in [
        parse_avc_record(input.clone()),
        parse_hevc_record(input.clone()),
        parse_av1_record(input.clone()),
    ] {
        if let Ok(config) = parsed {
            if let Ok(sets) = parameter_sets(&config) {
                let _ = avc_record_from_parameter_sets(&sets, &sets);
                let _ = hevc_record_from_parameter_sets(&sets, &sets, &sets);
            }
        }
    }
    if let Ok(audio) = parse_aac_asc(input.clone()) {
        let _ = adts::build_header(&audio, data.len());
    }
    if let Ok(h) = adts::parse_header(data) {
        let _ = h.audio_config();
    }
    let _ = av1_strip_temporal_delimiters(input.clone());
    // Parameter sets straight from the input (an Annex B stream of SPS/PPS...).
    let nals: Vec<Bytes> = nal::annexb_nals(data).map(Bytes::copy_from_slice).collect();
    let _ = avc_record_from_parameter_sets(&nals, &nals);
    let _ = hevc_record_from_parameter_sets(&nals, &nals, &nals);
    let mut out = BytesMut::new();
    nal::annexb_to_length_prefixed(data, &mut out);
    let mut back = BytesMut::new();
    // Round trip: what annexb_to_length_prefixed writes must convert back.
    assert!(nal::length_prefixed_to_annexb(&out, 4, &mut back).is_ok());
    for size in 1..=4u8 {
        let mut out = BytesMut::new();
        let _ = nal::length_prefixed_to_annexb(data, size, &mut out);
        for n in nal::length_prefixed_nals(data, size) {
            if n.is_err() {
                break;
            }
        }
    }
});
