//! Every rule of Delivery Directives parsing and blocking reload (draft-pantos-hls-rfc8216bis
//! §6.2.5), each test quoting the sentence it checks.

use super::*;

/// A live stream: segments up to 9 complete (10 is being built with 2 parts), 6 parts in
/// segment 9, parts of 1/3 s, target duration 2 s.
fn edge() -> LiveEdge {
    LiveEdge {
        next_msn: 10,
        last_segment_parts: 6,
        open_parts: 2,
        oldest_msn: 0,
        part_target_secs: Some(1.0 / 3.0),
        target_duration_secs: 2,
        ended: false,
    }
}

fn directives(msn: Option<u64>, part: Option<u64>) -> DeliveryDirectives {
    DeliveryDirectives {
        msn,
        part,
        skip: false,
    }
}

fn wait(msn: u64, part: Option<u64>) -> BlockingDecision {
    BlockingDecision::Wait {
        msn,
        part,
        timeout_ms: 6000,
    }
}

/// §6.2.5.2: "If the Playlist URI contains an _HLS_part directive but no _HLS_msn
/// directive, the Server MUST return Bad Request, such as HTTP 400."
#[test]
fn part_without_msn_is_a_bad_request() {
    assert_eq!(
        parse_delivery_directives(Some("_HLS_part=2")),
        Err(BadDirective::PartWithoutMsn)
    );
    assert_eq!(
        decide_blocking(&edge(), &directives(None, Some(2))),
        BlockingDecision::BadRequest(BadDirective::PartWithoutMsn)
    );
}

/// §6.2.5: Delivery Directives are `_HLS_msn=<M>` and `_HLS_part=<N>` with "a
/// decimal-integer value"; `_HLS_skip` with "a value of YES or v2". Anything else under
/// those names is refused; other parameters are not ours to judge.
#[test]
fn directives_parse_strictly() {
    let ok = |q: &str| parse_delivery_directives(Some(q));
    assert_eq!(ok(""), Ok(DeliveryDirectives::default()));
    assert_eq!(
        parse_delivery_directives(None),
        Ok(DeliveryDirectives::default())
    );
    assert_eq!(
        ok("_HLS_msn=273&_HLS_part=3&_HLS_skip=YES"),
        Ok(DeliveryDirectives {
            msn: Some(273),
            part: Some(3),
            skip: true
        })
    );
    assert_eq!(
        ok("token=abc.def&_HLS_skip=v2&_HLS_report=x&x"),
        Ok(DeliveryDirectives {
            msn: None,
            part: None,
            skip: true
        })
    );
    assert_eq!(
        ok("_HLS_msn=18446744073709551615").map(|d| d.msn),
        Ok(Some(u64::MAX))
    );
    for bad in [
        "_HLS_msn=",
        "_HLS_msn",
        "_HLS_msn=-1",
        "_HLS_msn=+1",
        "_HLS_msn=1.0",
        "_HLS_msn=%31",
        "_HLS_msn= 1",
        "_HLS_msn=18446744073709551616",
        "_HLS_msn=000000000000000000001",
        "_HLS_msn=1&_HLS_part=x",
    ] {
        assert!(
            matches!(ok(bad), Err(BadDirective::Malformed(_))),
            "{bad}: {:?}",
            ok(bad)
        );
    }
    for bad in ["_HLS_skip=yes", "_HLS_skip=NO", "_HLS_skip=", "_HLS_skip"] {
        assert_eq!(ok(bad), Err(BadDirective::Malformed("_HLS_skip")), "{bad}");
    }
    assert_eq!(
        ok("_HLS_msn=1&_HLS_msn=1"),
        Err(BadDirective::Repeated("_HLS_msn"))
    );
    assert_eq!(
        ok("_HLS_msn=1&_HLS_part=1&_HLS_part=2"),
        Err(BadDirective::Repeated("_HLS_part"))
    );
    assert_eq!(
        ok("_HLS_skip=YES&_HLS_skip=YES"),
        Err(BadDirective::Repeated("_HLS_skip"))
    );
}

/// §6.2.5.2: "When the Playlist URI contains an _HLS_msn directive and no _HLS_part
/// directive, the Server MUST defer responding to the request until the Playlist contains
/// a Media Segment with a Media Sequence Number of M or later or it responds with an
/// error."
#[test]
fn msn_alone_waits_for_the_segment() {
    assert_eq!(
        decide_blocking(&edge(), &directives(Some(9), None)),
        BlockingDecision::Ready
    );
    assert_eq!(
        decide_blocking(&edge(), &directives(Some(10), None)),
        wait(10, None)
    );
    assert_eq!(
        decide_blocking(&edge(), &directives(Some(11), None)),
        wait(11, None)
    );
}

/// §6.2.5.2: "When the Playlist URI contains both an _HLS_msn directive and an _HLS_part
/// directive, the Server MUST defer responding to the request until the Playlist contains
/// the Partial Segment with Part Index N and with a Media Sequence Number of M or later or
/// it responds with an error."
#[test]
fn msn_and_part_wait_for_the_part() {
    // Parts 0 and 1 of segment 10 exist.
    assert_eq!(
        decide_blocking(&edge(), &directives(Some(10), Some(1))),
        BlockingDecision::Ready
    );
    assert_eq!(
        decide_blocking(&edge(), &directives(Some(10), Some(2))),
        wait(10, Some(2))
    );
    assert_eq!(
        decide_blocking(&edge(), &directives(Some(11), Some(0))),
        wait(11, Some(0))
    );
    // Any part of a complete segment that had it.
    assert_eq!(
        decide_blocking(&edge(), &directives(Some(9), Some(5))),
        BlockingDecision::Ready
    );
    // Once the part is published the same request is ready.
    let mut later = edge();
    later.open_parts = 3;
    assert_eq!(
        decide_blocking(&later, &directives(Some(10), Some(2))),
        BlockingDecision::Ready
    );
}

/// §6.2.5.2: "If the Client requests a Part Index greater than that of the final Partial
/// Segment of the Parent Segment, the Server MUST treat the request as one for Part Index 0
/// of the following Parent Segment."
#[test]
fn a_part_past_the_last_of_a_segment_is_part_0_of_the_next() {
    // Segment 9 had parts 0..=5: part 6 means part 0 of segment 10, which exists.
    assert_eq!(
        decide_blocking(&edge(), &directives(Some(9), Some(6))),
        BlockingDecision::Ready
    );
    assert_eq!(
        decide_blocking(&edge(), &directives(Some(9), Some(60))),
        BlockingDecision::Ready
    );
    // Segment 10 has no part yet: wait for its part 0.
    let mut fresh = edge();
    fresh.open_parts = 0;
    assert_eq!(
        decide_blocking(&fresh, &directives(Some(9), Some(6))),
        wait(10, Some(0))
    );
}

/// §6.2.5.2: "The Server MUST deliver the entire Playlist, even if the requested Media
/// Segment is not the last one in the Playlist, and even if it is no longer in the
/// Playlist."
#[test]
fn old_and_evicted_segments_are_ready() {
    let mut slid = edge();
    slid.oldest_msn = 5;
    for msn in [0, 4, 5, 8] {
        assert_eq!(
            decide_blocking(&slid, &directives(Some(msn), None)),
            BlockingDecision::Ready
        );
        assert_eq!(
            decide_blocking(&slid, &directives(Some(msn), Some(99))),
            BlockingDecision::Ready
        );
    }
}

/// §6.2.5.2: "A Server MUST ignore _HLS_msn and _HLS_part if the Playlist contains an
/// EXT-X-ENDLIST tag."
#[test]
fn an_ended_playlist_ignores_the_directives() {
    let mut ended = edge();
    ended.ended = true;
    for (msn, part) in [
        (Some(10), None),
        (Some(12), Some(0)),
        (Some(999), None),
        (None, Some(1)),
    ] {
        assert_eq!(
            decide_blocking(&ended, &directives(msn, part)),
            BlockingDecision::Ready
        );
    }
}

/// §6.2.5.2: "If the _HLS_msn is greater than the Media Sequence Number of the last Media
/// Segment in the current Playlist plus two, ... then the server SHOULD immediately return
/// Bad Request, such as HTTP 400."
#[test]
fn an_msn_more_than_two_segments_ahead_is_a_bad_request() {
    // The last complete segment is 9.
    assert_eq!(
        decide_blocking(&edge(), &directives(Some(11), None)),
        wait(11, None)
    );
    assert_eq!(
        decide_blocking(&edge(), &directives(Some(12), None)),
        BlockingDecision::BadRequest(BadDirective::MsnTooFarAhead)
    );
    assert_eq!(
        decide_blocking(&edge(), &directives(Some(u64::MAX), Some(0))),
        BlockingDecision::BadRequest(BadDirective::MsnTooFarAhead)
    );
    // Before the first segment: 0 and 1 may be waited for.
    let mut empty = edge();
    empty.next_msn = 0;
    empty.open_parts = 0;
    empty.last_segment_parts = 0;
    assert_eq!(
        decide_blocking(&empty, &directives(Some(1), None)),
        wait(1, None)
    );
    assert_eq!(
        decide_blocking(&empty, &directives(Some(2), None)),
        BlockingDecision::BadRequest(BadDirective::MsnTooFarAhead)
    );
}

/// §6.2.5.2: "... or if the _HLS_part exceeds the last Partial Segment in the current
/// Playlist by the Advance Part Limit, then the server SHOULD immediately return Bad
/// Request, such as HTTP 400. The Advance Part Limit is three divided by the Part Target
/// Duration if the Part Target Duration is less than one second, or three otherwise."
#[test]
fn a_part_beyond_the_advance_part_limit_is_a_bad_request() {
    // 1/3 s parts: the limit is 9 parts; the last part of segment 10 is part 1.
    assert_eq!(edge().advance_part_limit(), 9);
    assert_eq!(
        decide_blocking(&edge(), &directives(Some(10), Some(10))),
        wait(10, Some(10))
    );
    assert_eq!(
        decide_blocking(&edge(), &directives(Some(10), Some(11))),
        BlockingDecision::BadRequest(BadDirective::PartTooFarAhead)
    );
    let mut long_parts = edge();
    long_parts.part_target_secs = Some(1.0);
    assert_eq!(long_parts.advance_part_limit(), 3);
    assert_eq!(
        decide_blocking(&long_parts, &directives(Some(10), Some(4))),
        wait(10, Some(4))
    );
    assert_eq!(
        decide_blocking(&long_parts, &directives(Some(10), Some(5))),
        BlockingDecision::BadRequest(BadDirective::PartTooFarAhead)
    );
}

/// §6.2.5.2: "A Server that cannot provide the requested Playlist after blocking for more
/// than three Target Durations SHOULD return Service Unavailable, such as HTTP 503."
#[test]
fn a_wait_names_its_timeout_and_the_503() {
    let BlockingDecision::Wait { timeout_ms, .. } =
        decide_blocking(&edge(), &directives(Some(10), None))
    else {
        panic!("not a wait");
    };
    assert_eq!(timeout_ms, 3 * 2000);
    assert_eq!(BlockingDecision::TIMEOUT_STATUS, 503);
    assert_eq!(BlockingDecision::BAD_REQUEST_STATUS, 400);
}

/// A request without directives is a plain reload: answered at once.
#[test]
fn no_directives_no_blocking() {
    assert_eq!(
        decide_blocking(&edge(), &directives(None, None)),
        BlockingDecision::Ready
    );
}

/// Part names: unique per segment and part, parsed back to their parent, nothing else
/// parsed as a part.
#[test]
fn part_names_round_trip() {
    assert_eq!(part_uri("seg-3-17.m4s", 2), "seg-3-17.2.m4s");
    assert_eq!(
        parse_part_uri("seg-3-17.2.m4s"),
        Some(("seg-3-17.m4s".to_string(), 2))
    );
    for i in [0, 1, 9, 10, u32::MAX] {
        let uri = part_uri("seg-1-0.m4s", i);
        assert_eq!(parse_part_uri(&uri), Some(("seg-1-0.m4s".to_string(), i)));
    }
    for not_a_part in [
        "seg-3-17.m4s",
        "seg-3-17.02.m4s",
        "seg-3-17..m4s",
        "seg-3-17.x.m4s",
        ".1.m4s",
        "seg.1.",
        "seg-3-17.99999999999.m4s",
        "init-1-0.mp4",
    ] {
        assert_eq!(parse_part_uri(not_a_part), None, "{not_a_part}");
    }
}
