//! The demo and the connector simulator: see livectx work before having an Autoplay account
//! or a Dify app.
//!
//! - [`config`]: the settings of `livectx demo` and `livectx simulate`.
//! - [`personas`]: simulated users with believable journeys, in Autoplay's exact wire format.
//! - [`posthog`]: the same journeys as posthog-js events in PostHog's webhook body.
//! - [`simulator`]: `livectx simulate`, an Autoplay connector stand-in (SSE stream and signed
//!   webhook pushes), with a load mode.
//! - [`runner`]: `livectx demo`, the real server and the simulator wired together in one
//!   process, narrated.

pub mod config;
pub mod personas;
pub mod posthog;
pub mod runner;
pub mod simulator;

pub use config::{DemoConfig, DemoSource, PushFormat, SimulateConfig};
