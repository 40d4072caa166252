//! Codec configuration record parsers (avcC, hvcC, av1C, AudioSpecificConfig) and RFC 6381
//! `CODECS` strings. (Being written.)
