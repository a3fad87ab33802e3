//! `weft-await`: the job wrapper.
//!
//! `weft-await [--port 4191] [--timeout 2m] [--shutdown] -- CMD ARGS…`
//! polls the proxy's `GET /ready`, runs the command, and with `--shutdown`
//! supervises it and posts `/shutdown` afterwards, so a Kubernetes Job's pod
//! terminates when its work is done.
//!
//! | step | module |
//! |---|---|
//! | flags and the plan of what to do | [`cmd`], [`duration`], [`env`](mod@env) |
//! | wait for `/ready` with backoff | [`ready`] over [`http`] |
//! | run, forward signals, reap | [`child`] |

pub mod child;
pub mod cmd;
pub mod duration;
pub mod env;
pub mod http;
pub mod ready;
