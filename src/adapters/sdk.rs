//! What every adapter needs to know about an SDK error that outlived the SDK's retries: can
//! trying again later help (fail the invocation so EventBridge retries it), or will the same
//! request fail the same way?

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// Error codes that mean "slow down" or "try later": the ones the SDK's own retry classifier
/// treats as throttling or transient, the `Throttling` code of the Query-compatible services
/// (CloudWatch), DynamoDB's throughput and internal errors, and the 5xx codes some services
/// report in the error body.
///
/// Not `LimitExceededException`, which the SDK's classifier also lists: in ECR it means a
/// service quota was reached (images per repository, ...), which waiting does not fix.
const TRANSIENT_CODES: &[&str] = &[
    "Throttling",
    "SlowDown",
    "PriorRequestNotComplete",
    "BandwidthLimitExceeded",
    "EC2ThrottledException",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestTimeout",
    "RequestTimeoutException",
    "ServiceUnavailable",
    "InternalFailure",
    "InternalServerError",
    "InternalServiceFault",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
];

/// Whether an error that outlived the SDK's retries may go away on its own.
pub fn is_transient<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    let retryable_status = |status: u16| status == 429 || (500..600).contains(&status);
    match err {
        SdkError::TimeoutError(_) => true,
        // No response: the network or the endpoint; a user error is a wrong configuration.
        SdkError::DispatchFailure(failure) => !failure.is_user(),
        SdkError::ResponseError(response) => retryable_status(response.raw().status().as_u16()),
        SdkError::ServiceError(service) => {
            service
                .err()
                .code()
                .is_some_and(|code| TRANSIENT_CODES.contains(&code))
                || retryable_status(service.raw().status().as_u16())
        }
        // The request could not be built: the same input fails the same way.
        _ => false,
    }
}

/// A one-line description for logs and errors: the service's code and message when it answered,
/// else the SDK's own account of what went wrong (timeout, connection, ...). Never the raw
/// response, which is long and may echo request details.
pub fn describe<E: ProvideErrorMetadata + std::error::Error + 'static>(
    err: &SdkError<E, HttpResponse>,
) -> String {
    match err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let status = service.raw().status().as_u16();
            match (e.code(), e.message()) {
                (Some(code), Some(message)) => format!("{code}: {message} (HTTP {status})"),
                (Some(code), None) => format!("{code} (HTTP {status})"),
                _ => format!("HTTP {status} without an error code"),
            }
        }
        other => aws_smithy_types::error::display::DisplayErrorContext(other).to_string(),
    }
}

/// The account the SDK configuration's credentials are for (`sts:GetCallerIdentity`, in the
/// configuration's Region): the auditor's own account, for the command line and the Lambda
/// alike.
pub async fn caller_account(
    sdk: &aws_config::SdkConfig,
) -> Result<crate::domain::ids::AccountId, String> {
    let identity = aws_sdk_sts::Client::new(sdk)
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| {
            format!(
                "cannot tell which account the credentials are for (sts:GetCallerIdentity): {}",
                describe(&e)
            )
        })?;
    let account = identity.account().unwrap_or_default();
    crate::domain::ids::AccountId::parse(account)
        .map_err(|e| format!("sts:GetCallerIdentity names account {account:?}, which {e}"))
}
