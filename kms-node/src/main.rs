//! `kms`: the server and the admin CLI.
#![forbid(unsafe_code)]

fn main() {
    std::process::exit(kms_node::cli::main());
}
