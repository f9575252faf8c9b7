//! Plans as data, made from host facts without changing anything: what `bind` and
//! `unbind` would do, the persistent setup of `enable` (file contents, kernel
//! arguments, regenerators), what `disable` leaves of it, and what `verify` checks
//! after the reboot.
//! [`crate::apply`] carries plans out.

pub mod bind;
pub mod disable;
pub mod enable;
pub mod verify;
