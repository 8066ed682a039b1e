//! The leadstream contract: the governed Avro tracking plan under `avro/`,
//! the checks that govern it, a Confluent-compatible registry that serves it,
//! the resolvers other stages use to find schemas, and the JSON ⇄ Avro codec.

pub mod check;
pub mod codec;
pub mod compat;
pub mod datum;
pub mod docs;
pub mod hash;
pub mod lint;
pub mod lock;
pub mod plan;
pub mod platform;
pub mod problem;
pub mod publish;
pub mod registry;
pub mod resolver;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded_plan.rs"));
}

pub use check::check;
pub use codec::{Decoder, EncodeError, Encoder, FrameError};
pub use plan::{Plan, PlanError, SchemaVersion, Subject};
pub use platform::Platform;
pub use problem::Problem;
pub use resolver::{EmbeddedResolver, HttpResolver, ResolveError, SchemaResolver};

/// Confluent wire format: magic byte 0, then the schema id as 4 big-endian bytes.
pub const MAGIC_BYTE: u8 = 0;
/// Length of the Confluent framing header.
pub const FRAME_HEADER_LEN: usize = 5;
/// Compatibility level every governed subject is checked and served under.
pub const COMPATIBILITY: &str = "BACKWARD_TRANSITIVE";
