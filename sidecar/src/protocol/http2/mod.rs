//! HTTP/2 (RFC 9113) as an observer reads it: frames out of one direction's chunks, with gaps
//! ([`frame`]), and header blocks decoded by an HPACK decoder that may have joined the
//! connection late ([`hpack`], with its Huffman code in [`huffman`]), and the streams of a
//! connection matched into exchanges ([`parser`]).

pub mod frame;
pub mod hpack;
pub mod huffman;
pub mod parser;

pub use parser::PROTOCOL;

#[cfg(test)]
mod tests;
