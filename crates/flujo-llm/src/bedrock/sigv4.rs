//! AWS Signature Version 4 for Bedrock requests, with the smithy-rs `aws-sigv4` crate (what the AWS SDK for
//! Rust signs with): each attempt is signed just before it is sent, over its method, URL (path segments
//! encoded twice, as every service but S3 wants), `content-type`, `host`, `x-amz-date` and the SHA-256 of the
//! body; a session token travels as `x-amz-security-token` and is signed too. The headers carrying secrets
//! are marked sensitive.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use flujo_http::reqwest;
use reqwest::header::{HeaderName, HeaderValue};

use super::credentials::AwsCredentials;
use crate::error::LlmError;
use crate::http::SignRequest;

/// Signs requests for one service in one region.
pub(crate) struct SigV4Signer<'a> {
    pub credentials: &'a AwsCredentials,
    pub region: &'a str,
    /// The signing name (`bedrock`).
    pub service: &'a str,
    /// The signing time of each attempt (the clock; fixed in tests).
    pub now: fn() -> SystemTime,
}

impl SignRequest for SigV4Signer<'_> {
    fn sign(&self, request: &mut reqwest::Request) -> Result<(), LlmError> {
        let failed = |what: &dyn std::fmt::Display| LlmError::Config(format!("cannot sign the request: {what}"));
        let c = self.credentials;
        let identity = Credentials::new(
            c.access_key_id.clone(),
            c.secret_access_key.expose().to_owned(),
            c.session_token.as_ref().map(|t| t.expose().to_owned()),
            None,
            "flujo",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(self.region)
            .name(self.service)
            .time((self.now)())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| failed(&e))?
            .into();
        let instructions = {
            let headers = request.headers().iter().filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)));
            let body = request.body().and_then(reqwest::Body::as_bytes).unwrap_or_default();
            let signable = SignableRequest::new(
                request.method().as_str(),
                request.url().as_str(),
                headers,
                SignableBody::Bytes(body),
            )
            .map_err(|e| failed(&e))?;
            sign(signable, &params).map_err(|e| failed(&e))?.into_parts().0
        };
        let (headers, _query) = instructions.into_parts();
        for h in headers {
            let mut value = HeaderValue::from_str(h.value()).map_err(|_| failed(&"a header value is not valid"))?;
            value.set_sensitive(h.sensitive() || h.name() == "authorization");
            request.headers_mut().insert(HeaderName::from_static(h.name()), value);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    /// The worked example of the AWS SigV4 documentation ("Create a signed AWS API request", IAM ListUsers,
    /// 2015-08-30T12:36:00Z, AKIDEXAMPLE).
    #[test]
    fn signs_the_documented_example() {
        let creds = AwsCredentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", None);
        let signer = SigV4Signer {
            credentials: &creds,
            region: "us-east-1",
            service: "iam",
            now: || UNIX_EPOCH + Duration::from_secs(1_440_938_160),
        };
        let client = flujo_http::client_builder().build().unwrap();
        let mut req = client
            .get("https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08")
            .header("content-type", "application/x-www-form-urlencoded; charset=utf-8")
            .build()
            .unwrap();
        signer.sign(&mut req).unwrap();
        let auth = req.headers()["authorization"].to_str().unwrap();
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
        assert_eq!(req.headers()["x-amz-date"], "20150830T123600Z");
        assert!(req.headers()["authorization"].is_sensitive());
        assert!(!format!("{req:?}").contains("5d672d79"), "the signature never shows in Debug output");
        // A session token is sent and signed.
        let creds = AwsCredentials::new("AKIDEXAMPLE", "secret", Some("TOKEN123"));
        let signer = SigV4Signer { credentials: &creds, ..signer };
        let mut req =
            client.post("https://bedrock-runtime.us-east-1.amazonaws.com/model/a%3A0/converse").build().unwrap();
        signer.sign(&mut req).unwrap();
        assert_eq!(req.headers()["x-amz-security-token"], "TOKEN123");
        assert!(req.headers()["authorization"]
            .to_str()
            .unwrap()
            .contains("SignedHeaders=host;x-amz-date;x-amz-security-token"));
    }
}
