//! The packets transcoding reads and writes (issue 13: being written).
