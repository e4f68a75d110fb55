//! Every JSON body the HTTP API reads, as the broker reads it (serde_json into the
//! sealrelay-wire types): arbitrary bytes are a value or an error, never a panic or a
//! runaway allocation (deep nesting is refused by serde_json's recursion limit).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealrelay_wire::api::{
    AddInstanceRequest, Enrolment, KeyProofBody, KeyringBody, PasswordWrap, PreloginRequest,
    PreviousRequest, RegisterRequest, ResetRequest, RollbackRequest, RotateTokenRequest,
};

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<PreloginRequest>(data);
    let _ = serde_json::from_slice::<RegisterRequest>(data);
    let _ = serde_json::from_slice::<PasswordWrap>(data);
    let _ = serde_json::from_slice::<ResetRequest>(data);
    let _ = serde_json::from_slice::<AddInstanceRequest>(data);
    let _ = serde_json::from_slice::<Enrolment>(data);
    let _ = serde_json::from_slice::<KeyringBody>(data);
    let _ = serde_json::from_slice::<RotateTokenRequest>(data);
    let _ = serde_json::from_slice::<KeyProofBody>(data);
    let _ = serde_json::from_slice::<PreviousRequest>(data);
    let _ = serde_json::from_slice::<RollbackRequest>(data);
    let _ = serde_json::from_slice::<serde_json::Value>(data);
});
