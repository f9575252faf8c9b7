pub mod pinning;
