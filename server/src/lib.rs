//! The Tacit relay server: a blind store-and-forward server for opaque ciphertext.
pub mod store;
#[doc(hidden)]
pub mod testing;
