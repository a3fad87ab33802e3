//! JSON answers for the controller's HTTPS endpoints (the proxy API's identity and
//! destination services, the injector's webhook): the body, the status and
//! `content-type: application/json` in one place; errors are `{"error": "…"}`
//! ([`ErrorResponse`]).

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;
use weft_api::certify::ErrorResponse;

/// `body` as JSON with `status`.
pub fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut rsp = Response::new(Full::new(Bytes::from(bytes)));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    rsp
}

/// `{"error": error}` with `status`.
pub fn error_response(status: StatusCode, error: String) -> Response<Full<Bytes>> {
    json_response(status, &ErrorResponse { error })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn errors_are_json_objects_with_an_error_field() {
        let rsp = error_response(StatusCode::BAD_REQUEST, "no \"addr\"".into());
        assert_eq!(rsp.status(), 400);
        assert_eq!(rsp.headers()[header::CONTENT_TYPE], "application/json");
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], br#"{"error":"no \"addr\""}"#);
    }
}
