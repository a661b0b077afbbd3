//! Helpers for the integration tests: start real `kms` processes and talk to them.
