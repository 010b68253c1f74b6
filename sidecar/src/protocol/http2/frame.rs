//! HTTP/2 frames.
