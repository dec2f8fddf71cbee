//! The simulator's HTTP API, in process: the `/v2` contract (`contract`), roles
//! (`roles`), fault injection and the rate limiter (`faults`), and the `/_sim` control
//! API with the `Sim` handle's control methods and seeds (`admin`), and several
//! organisations in one simulator (`orgs`). `common` holds the client and the demo
//! organization's ids.

mod admin;
mod common;
mod contract;
mod faults;
mod orgs;
mod roles;
