#!/usr/bin/env bash
# Deploy both services (realtime-gateway, orchestrator) to AWS ECS on Fargate or Google Cloud Run.
#
#   ./deploy.sh aws-ecs                 build, push and roll out on ECS behind an ALB
#   ./deploy.sh google-cloud-run        build, push and roll out on Cloud Run
#   ./deploy.sh --dry-run <target>      print every command without changing anything
#
# Each command is printed as `+ <command>` before it runs. With --dry-run, commands that change
# something are printed only; read-only look-ups (describe/list/get) still run, so the plan shows
# for each resource whether it would be created or updated. Re-running a deploy is safe: every
# resource is created when missing and updated when present.
#
# Settings come from environment variables; deploy/aws-ecs/README.md and
# deploy/google-cloud-run/README.md list them. Missing ones are reported all at once.
set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true # bash 5.2: keep '&' literal in ${var//x/y}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROG="deploy.sh"
DRY_RUN=0
TARGET=""
RENDER_DIR=""
exec 3>&1 # the plan goes to the original stdout, also from inside $(...)
export AWS_PAGER=""                    # the AWS CLI would otherwise page output and wait
export CLOUDSDK_CORE_DISABLE_PROMPTS=1 # gcloud never waits for an answer

usage() {
  cat <<'EOF'
usage: ./deploy.sh [--dry-run] aws-ecs|google-cloud-run

  aws-ecs            deploy to AWS ECS (Fargate) behind an Application Load Balancer
  google-cloud-run   deploy to Google Cloud Run
  --dry-run, -n      print every command; change nothing (read-only look-ups still run)
  --help, -h         this help

Settings: environment variables, listed in deploy/aws-ecs/README.md and
deploy/google-cloud-run/README.md.
EOF
}

die() {
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  exit 1
}

note() { printf '==> %s\n' "$*" >&3; }
warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }

show() {
  local line
  line="$(printf '%q ' "$@")"
  printf '+ %s\n' "${line% }" >&3
}

# A command that changes something: printed, and run unless --dry-run.
run() {
  show "$@"
  if ((DRY_RUN)); then
    return 0
  fi
  "$@"
}

# Like run, for a command whose output is needed; a dry run prints $1 in its place.
run_out() {
  local placeholder="$1"
  shift
  show "$@"
  if ((DRY_RUN)); then
    printf '%s\n' "$placeholder"
    return 0
  fi
  "$@"
}

# A read-only look-up: printed and run in both modes; its status is the command's.
query() {
  show "$@"
  "$@"
}

need_cli() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' is not on PATH: $2"
}

need_vars() {
  local name missing=()
  for name in "$@"; do
    [[ -n "${!name:-}" ]] || missing+=("$name")
  done
  if ((${#missing[@]})); then
    die "missing required variable(s) for $TARGET: ${missing[*]} (see deploy/$TARGET/README.md)"
  fi
}

# Fill ${NAME} placeholders of a template from the variables named after it; refuse values that
# would break the JSON/YAML they land in, and placeholders left unfilled.
render() {
  local template="$1" out="$2" content name value
  shift 2
  content="$(<"$template")"
  for name in "$@"; do
    value="${!name-}"
    case "$value" in
      *'"'* | *\\* | *$'\n'*) die "$name must not contain quotes, backslashes or newlines" ;;
    esac
    content="${content//"\${$name}"/$value}"
  done
  if [[ "$content" =~ \$\{[A-Z_][A-Z0-9_]*\} ]]; then
    die "$template: placeholder ${BASH_REMATCH[0]} has no value"
  fi
  printf '%s\n' "$content" >"$out"
}

image_tag() {
  if [[ -n "${IMAGE_TAG:-}" ]]; then
    printf '%s\n' "$IMAGE_TAG"
    return
  fi
  command -v git >/dev/null 2>&1 || die "set IMAGE_TAG (git is not available to derive it)"
  local sha
  sha="$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null)" ||
    die "set IMAGE_TAG ($ROOT is not a git checkout)"
  if [[ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
    sha="$sha-dirty-$(date -u +%Y%m%d%H%M%S)"
  fi
  printf '%s\n' "$sha"
}

build_and_push() { # build_and_push SERVICE IMAGE
  run docker build --platform linux/amd64 -f "$ROOT/$1/Dockerfile" -t "$2" "$ROOT"
  run docker push "$2"
}

check_positive_int() {
  local name
  for name in "$@"; do
    [[ "${!name}" =~ ^[1-9][0-9]*$ ]] || die "$name must be a whole number >= 1 (got '${!name}')"
  done
}

# ---------------------------------------------------------------------------------------------
# AWS ECS (Fargate)
# ---------------------------------------------------------------------------------------------

ECS_DIR="$ROOT/deploy/aws-ecs"

# The SSM parameter names a task definition template reads its secrets from.
ssm_secret_names() {
  # shellcheck disable=SC2016 # the literal placeholder text is what is searched for
  grep -o 'parameter/${SSM_PREFIX}/[A-Za-z0-9_]*' "$1" | sed 's#.*/##'
}

ecs_service_status() { # ecs_service_status SERVICE -> ACTIVE | DRAINING | INACTIVE | MISSING | None
  query aws ecs describe-services --region "$AWS_REGION" --cluster "$ECS_CLUSTER" \
    --services "$1" --query 'services[0].status' --output text
}

deploy_aws_ecs() {
  need_cli aws "install the AWS CLI v2 and configure credentials (aws configure / AWS_PROFILE)"
  need_cli docker "install Docker to build and push the images"
  need_vars AWS_REGION ECS_CLUSTER ECS_SUBNETS ECS_SECURITY_GROUPS VPC_ID ALB_ARN \
    ALB_LISTENER_ARN ECS_EXECUTION_ROLE_ARN PUBLIC_BASE_URL CHROMA_HOST

  DEPLOY_NAME="${DEPLOY_NAME:-vao}"
  [[ "$DEPLOY_NAME" =~ ^[a-z][a-z0-9-]{0,14}$ ]] ||
    die "DEPLOY_NAME must be 1-15 lowercase letters, digits or '-' (got '$DEPLOY_NAME')"
  SSM_PREFIX="${SSM_PREFIX:-$DEPLOY_NAME/production}"
  SSM_PREFIX="${SSM_PREFIX#/}"
  ECS_NAMESPACE="${ECS_NAMESPACE:-$DEPLOY_NAME}"
  VOICE_PROVIDER="${VOICE_PROVIDER:-twilio}"
  CHROMA_PORT="${CHROMA_PORT:-8000}"
  GATEWAY_DESIRED_COUNT="${GATEWAY_DESIRED_COUNT:-2}"
  ORCHESTRATOR_DESIRED_COUNT="${ORCHESTRATOR_DESIRED_COUNT:-1}"
  LOG_RETENTION_DAYS="${LOG_RETENTION_DAYS:-30}"
  check_positive_int GATEWAY_DESIRED_COUNT ORCHESTRATOR_DESIRED_COUNT CHROMA_PORT
  if [[ -z "${ECS_TASK_ROLE_ARN:-}" ]]; then
    warn "ECS_TASK_ROLE_ARN is not set: the tasks run with the execution role"
    ECS_TASK_ROLE_ARN="$ECS_EXECUTION_ROLE_ARN"
  fi
  local region=(--region "$AWS_REGION")
  local tag status svc
  tag="$(image_tag)"

  note "AWS account and ECS cluster"
  if [[ -z "${AWS_ACCOUNT_ID:-}" ]]; then
    AWS_ACCOUNT_ID="$(query aws sts get-caller-identity "${region[@]}" --query Account --output text)" ||
      die "cannot read the AWS account (are credentials configured?)"
  fi
  status="$(query aws ecs describe-clusters "${region[@]}" --clusters "$ECS_CLUSTER" \
    --query 'clusters[0].status' --output text)" || status=""
  [[ "$status" == "ACTIVE" ]] ||
    die "ECS cluster '$ECS_CLUSTER' is not ACTIVE in $AWS_REGION (create it: aws ecs create-cluster --cluster-name $ECS_CLUSTER)"
  # Service Connect lets the gateway reach the orchestrator as http://orchestrator:8000; this
  # creates the Cloud Map namespace when it does not exist yet.
  run aws ecs update-cluster "${region[@]}" --cluster "$ECS_CLUSTER" \
    --service-connect-defaults "namespace=$ECS_NAMESPACE"

  note "Secrets (SSM Parameter Store, SecureString, under /$SSM_PREFIX/)"
  local names=() name missing
  while IFS= read -r name; do
    names+=("/$SSM_PREFIX/$name")
  done < <(
    {
      ssm_secret_names "$ECS_DIR/task-definition-realtime-gateway.json"
      ssm_secret_names "$ECS_DIR/task-definition-orchestrator.json"
    } | sort -u
  )
  missing="$(query aws ssm get-parameters "${region[@]}" \
    --names "${names[@]}" --query 'InvalidParameters' --output text)" ||
    die "cannot read SSM parameters under /$SSM_PREFIX/"
  if [[ -n "$missing" && "$missing" != "None" ]]; then
    local msg="SSM parameters missing: $missing (create each: aws ssm put-parameter --type SecureString --name NAME --value VALUE)"
    if ((DRY_RUN)); then warn "$msg"; else die "$msg"; fi
  fi

  note "Images (ECR)"
  local registry="$AWS_ACCOUNT_ID.dkr.ecr.$AWS_REGION.amazonaws.com"
  GATEWAY_IMAGE="$registry/$DEPLOY_NAME/realtime-gateway:$tag"
  ORCHESTRATOR_IMAGE="$registry/$DEPLOY_NAME/orchestrator:$tag"
  for svc in realtime-gateway orchestrator; do
    if ! query aws ecr describe-repositories "${region[@]}" \
      --repository-names "$DEPLOY_NAME/$svc" >/dev/null 2>&1; then
      run aws ecr create-repository "${region[@]}" --repository-name "$DEPLOY_NAME/$svc" \
        --image-scanning-configuration scanOnPush=true
    fi
  done
  printf '+ aws ecr get-login-password --region %q | docker login --username AWS --password-stdin %q\n' \
    "$AWS_REGION" "$registry" >&3
  if ((!DRY_RUN)); then
    aws ecr get-login-password "${region[@]}" | docker login --username AWS --password-stdin "$registry"
  fi
  build_and_push realtime-gateway "$GATEWAY_IMAGE"
  build_and_push orchestrator "$ORCHESTRATOR_IMAGE"

  note "Log groups (CloudWatch Logs)"
  local group found
  for svc in realtime-gateway orchestrator; do
    group="/ecs/$DEPLOY_NAME/$svc"
    found="$(query aws logs describe-log-groups "${region[@]}" --log-group-name-prefix "$group" \
      --query "logGroups[?logGroupName=='$group'].logGroupName" --output text)" || found=""
    if [[ -z "$found" || "$found" == "None" ]]; then
      run aws logs create-log-group "${region[@]}" --log-group-name "$group"
    fi
    run aws logs put-retention-policy "${region[@]}" --log-group-name "$group" \
      --retention-in-days "$LOG_RETENTION_DAYS"
  done

  note "Load balancer: target group, WebSocket idle timeout, listener"
  local tg_name="$DEPLOY_NAME-realtime-gateway"
  GATEWAY_TARGET_GROUP_ARN="$(query aws elbv2 describe-target-groups "${region[@]}" \
    --names "$tg_name" --query 'TargetGroups[0].TargetGroupArn' --output text 2>/dev/null)" ||
    GATEWAY_TARGET_GROUP_ARN=""
  local vars=(DEPLOY_NAME AWS_REGION AWS_ACCOUNT_ID SSM_PREFIX ECS_CLUSTER ECS_NAMESPACE VPC_ID
    ALB_ARN ECS_EXECUTION_ROLE_ARN ECS_TASK_ROLE_ARN GATEWAY_IMAGE ORCHESTRATOR_IMAGE
    PUBLIC_BASE_URL VOICE_PROVIDER CHROMA_HOST CHROMA_PORT GATEWAY_TARGET_GROUP_ARN)
  if [[ -z "$GATEWAY_TARGET_GROUP_ARN" || "$GATEWAY_TARGET_GROUP_ARN" == "None" ]]; then
    render "$ECS_DIR/target-group-realtime-gateway.json" "$RENDER_DIR/target-group.json" "${vars[@]}"
    GATEWAY_TARGET_GROUP_ARN="$(run_out \
      "arn:aws:elasticloadbalancing:$AWS_REGION:$AWS_ACCOUNT_ID:targetgroup/$tg_name/dry-run" \
      aws elbv2 create-target-group "${region[@]}" \
      --cli-input-json "file://$RENDER_DIR/target-group.json" \
      --query 'TargetGroups[0].TargetGroupArn' --output text)"
  else
    run aws elbv2 modify-target-group "${region[@]}" --target-group-arn "$GATEWAY_TARGET_GROUP_ARN" \
      --health-check-protocol HTTP --health-check-path /health \
      --health-check-interval-seconds 15 --health-check-timeout-seconds 5 \
      --healthy-threshold-count 2 --unhealthy-threshold-count 3 --matcher HttpCode=200
  fi
  render "$ECS_DIR/target-group-attributes.json" "$RENDER_DIR/target-group-attributes.json" "${vars[@]}"
  render "$ECS_DIR/load-balancer-attributes.json" "$RENDER_DIR/load-balancer-attributes.json" "${vars[@]}"
  run aws elbv2 modify-target-group-attributes "${region[@]}" \
    --cli-input-json "file://$RENDER_DIR/target-group-attributes.json"
  run aws elbv2 modify-load-balancer-attributes "${region[@]}" \
    --cli-input-json "file://$RENDER_DIR/load-balancer-attributes.json"
  run aws elbv2 modify-listener "${region[@]}" --listener-arn "$ALB_LISTENER_ARN" \
    --default-actions "Type=forward,TargetGroupArn=$GATEWAY_TARGET_GROUP_ARN"

  note "Task definitions and services (orchestrator first: the gateway calls it)"
  local network="awsvpcConfiguration={subnets=[$ECS_SUBNETS],securityGroups=[$ECS_SECURITY_GROUPS],assignPublicIp=${ECS_ASSIGN_PUBLIC_IP:-DISABLED}}"
  local task_arn desired
  for svc in orchestrator realtime-gateway; do
    render "$ECS_DIR/task-definition-$svc.json" "$RENDER_DIR/task-definition-$svc.json" "${vars[@]}"
    render "$ECS_DIR/service-$svc.json" "$RENDER_DIR/service-$svc.json" "${vars[@]}"
    task_arn="$(run_out "$DEPLOY_NAME-$svc" aws ecs register-task-definition "${region[@]}" \
      --cli-input-json "file://$RENDER_DIR/task-definition-$svc.json" \
      --query 'taskDefinition.taskDefinitionArn' --output text)"
    status="$(ecs_service_status "$svc")" || status=""
    if [[ "$status" == "ACTIVE" ]]; then
      run aws ecs update-service "${region[@]}" --cluster "$ECS_CLUSTER" --service "$svc" \
        --task-definition "$task_arn" --network-configuration "$network"
    else
      if [[ "$svc" == "realtime-gateway" ]]; then
        desired="$GATEWAY_DESIRED_COUNT"
      else
        desired="$ORCHESTRATOR_DESIRED_COUNT"
      fi
      run aws ecs create-service "${region[@]}" --cli-input-json "file://$RENDER_DIR/service-$svc.json" \
        --task-definition "$task_arn" --network-configuration "$network" --desired-count "$desired"
    fi
  done
  if [[ "${DEPLOY_NO_WAIT:-0}" != "1" ]]; then
    run aws ecs wait services-stable "${region[@]}" --cluster "$ECS_CLUSTER" \
      --services orchestrator realtime-gateway
  fi
  note "Done: gateway at $PUBLIC_BASE_URL (voice webhook: $PUBLIC_BASE_URL/voice/webhook)"
}

# ---------------------------------------------------------------------------------------------
# Google Cloud Run
# ---------------------------------------------------------------------------------------------

RUN_DIR="$ROOT/deploy/google-cloud-run"

# The Secret Manager secrets a rendered service YAML reads (the name under each secretKeyRef).
run_secret_names() {
  awk '/secretKeyRef:/ { getline; sub(/^[^:]*: */, ""); gsub(/"/, ""); print }' "$1"
}

run_service_url() { # run_service_url SERVICE -> its https URL, or nothing
  query gcloud run services describe "$1" --region "$GCP_REGION" --project "$GCP_PROJECT" \
    --format 'value(status.url)' 2>/dev/null || true
}

deploy_google_cloud_run() {
  need_cli gcloud "install the Google Cloud CLI and log in (gcloud auth login)"
  need_cli docker "install Docker to build and push the images"
  GCP_PROJECT="${GCP_PROJECT:-${GOOGLE_CLOUD_PROJECT:-}}"
  need_vars GCP_PROJECT GCP_REGION GCP_NETWORK GCP_SUBNET CHROMA_HOST

  DEPLOY_NAME="${DEPLOY_NAME:-vao}"
  [[ "$DEPLOY_NAME" =~ ^[a-z][a-z0-9-]{0,14}$ ]] ||
    die "DEPLOY_NAME must be 1-15 lowercase letters, digits or '-' (got '$DEPLOY_NAME')"
  VOICE_PROVIDER="${VOICE_PROVIDER:-twilio}"
  CHROMA_PORT="${CHROMA_PORT:-8000}"
  GATEWAY_MIN_INSTANCES="${GATEWAY_MIN_INSTANCES:-1}"
  GATEWAY_MAX_INSTANCES="${GATEWAY_MAX_INSTANCES:-10}"
  ORCHESTRATOR_MIN_INSTANCES="${ORCHESTRATOR_MIN_INSTANCES:-1}"
  ORCHESTRATOR_MAX_INSTANCES="${ORCHESTRATOR_MAX_INSTANCES:-5}"
  check_positive_int GATEWAY_MIN_INSTANCES GATEWAY_MAX_INSTANCES ORCHESTRATOR_MIN_INSTANCES \
    ORCHESTRATOR_MAX_INSTANCES CHROMA_PORT
  local project=(--project "$GCP_PROJECT")
  local tag repo="$DEPLOY_NAME" svc
  tag="$(image_tag)"

  note "APIs and Artifact Registry"
  run gcloud services enable run.googleapis.com artifactregistry.googleapis.com \
    secretmanager.googleapis.com "${project[@]}"
  if ! query gcloud artifacts repositories describe "$repo" --location "$GCP_REGION" \
    "${project[@]}" --format 'value(name)' >/dev/null 2>&1; then
    run gcloud artifacts repositories create "$repo" --repository-format docker \
      --location "$GCP_REGION" "${project[@]}" --description "voice agent orchestrator images"
  fi
  local host="$GCP_REGION-docker.pkg.dev"
  run gcloud auth configure-docker "$host" --quiet
  GATEWAY_IMAGE="$host/$GCP_PROJECT/$repo/realtime-gateway:$tag"
  ORCHESTRATOR_IMAGE="$host/$GCP_PROJECT/$repo/orchestrator:$tag"
  build_and_push realtime-gateway "$GATEWAY_IMAGE"
  build_and_push orchestrator "$ORCHESTRATOR_IMAGE"

  note "Service accounts"
  GATEWAY_SERVICE_ACCOUNT="$DEPLOY_NAME-realtime-gateway@$GCP_PROJECT.iam.gserviceaccount.com"
  ORCHESTRATOR_SERVICE_ACCOUNT="$DEPLOY_NAME-orchestrator@$GCP_PROJECT.iam.gserviceaccount.com"
  local account
  for account in "$GATEWAY_SERVICE_ACCOUNT" "$ORCHESTRATOR_SERVICE_ACCOUNT"; do
    if ! query gcloud iam service-accounts describe "$account" "${project[@]}" \
      --format 'value(email)' >/dev/null 2>&1; then
      run gcloud iam service-accounts create "${account%%@*}" "${project[@]}" \
        --display-name "${account%%@*} (Cloud Run)"
    fi
  done

  note "Orchestrator"
  ORCHESTRATOR_URL=""
  PUBLIC_BASE_URL="${PUBLIC_BASE_URL:-}"
  local vars=(DEPLOY_NAME GCP_PROJECT GCP_REGION GCP_NETWORK GCP_SUBNET GATEWAY_IMAGE
    ORCHESTRATOR_IMAGE GATEWAY_SERVICE_ACCOUNT ORCHESTRATOR_SERVICE_ACCOUNT ORCHESTRATOR_URL
    PUBLIC_BASE_URL VOICE_PROVIDER CHROMA_HOST CHROMA_PORT GATEWAY_MIN_INSTANCES
    GATEWAY_MAX_INSTANCES ORCHESTRATOR_MIN_INSTANCES ORCHESTRATOR_MAX_INSTANCES)
  render "$RUN_DIR/orchestrator.yaml" "$RENDER_DIR/orchestrator.yaml" "${vars[@]}"
  grant_secrets "$RENDER_DIR/orchestrator.yaml" "$ORCHESTRATOR_SERVICE_ACCOUNT"
  run gcloud run services replace "$RENDER_DIR/orchestrator.yaml" --region "$GCP_REGION" "${project[@]}"
  # Reachable without a Google identity token: its API checks our own JWTs (service tokens from
  # the gateway, management tokens from operators).
  run gcloud run services add-iam-policy-binding orchestrator --region "$GCP_REGION" \
    "${project[@]}" --member allUsers --role roles/run.invoker
  ORCHESTRATOR_URL="$(run_service_url orchestrator)"
  if [[ -z "$ORCHESTRATOR_URL" ]]; then
    ((DRY_RUN)) || die "Cloud Run did not report a URL for the orchestrator"
    ORCHESTRATOR_URL="https://orchestrator-dry-run.$GCP_REGION.run.app"
  fi

  note "Gateway"
  if [[ -z "$PUBLIC_BASE_URL" ]]; then
    PUBLIC_BASE_URL="$(run_service_url realtime-gateway)"
  fi
  render "$RUN_DIR/realtime-gateway.yaml" "$RENDER_DIR/realtime-gateway.yaml" "${vars[@]}"
  grant_secrets "$RENDER_DIR/realtime-gateway.yaml" "$GATEWAY_SERVICE_ACCOUNT"
  run gcloud run services replace "$RENDER_DIR/realtime-gateway.yaml" --region "$GCP_REGION" "${project[@]}"
  # Providers call the webhooks without Google credentials; the gateway checks their signatures.
  run gcloud run services add-iam-policy-binding realtime-gateway --region "$GCP_REGION" \
    "${project[@]}" --member allUsers --role roles/run.invoker
  if [[ -z "$PUBLIC_BASE_URL" ]]; then
    # First deploy: the URL exists only now; providers' signatures are checked against it.
    PUBLIC_BASE_URL="$(run_service_url realtime-gateway)"
    [[ -n "$PUBLIC_BASE_URL" ]] || PUBLIC_BASE_URL="https://realtime-gateway-dry-run.$GCP_REGION.run.app"
    run gcloud run services update realtime-gateway --region "$GCP_REGION" "${project[@]}" \
      --update-env-vars "PUBLIC_BASE_URL=$PUBLIC_BASE_URL"
  fi
  note "Done: gateway at $PUBLIC_BASE_URL (voice webhook: $PUBLIC_BASE_URL/voice/webhook)"
}

# Check that every secret a service reads exists, and let its service account read it.
grant_secrets() { # grant_secrets RENDERED_YAML SERVICE_ACCOUNT
  local secret missing=()
  while IFS= read -r secret; do
    if ! query gcloud secrets describe "$secret" --project "$GCP_PROJECT" \
      --format 'value(name)' >/dev/null 2>&1; then
      missing+=("$secret")
      continue
    fi
    run gcloud secrets add-iam-policy-binding "$secret" --project "$GCP_PROJECT" \
      --member "serviceAccount:$2" --role roles/secretmanager.secretAccessor --quiet
  done < <(run_secret_names "$1")
  if ((${#missing[@]})); then
    local msg="Secret Manager secrets missing: ${missing[*]} (create each: printf %s VALUE | gcloud secrets create NAME --data-file=- --project $GCP_PROJECT)"
    if ((DRY_RUN)); then warn "$msg"; else die "$msg"; fi
  fi
}

# ---------------------------------------------------------------------------------------------

main() {
  while (($#)); do
    case "$1" in
      --dry-run | -n) DRY_RUN=1 ;;
      --help | -h)
        usage
        exit 0
        ;;
      aws-ecs | google-cloud-run)
        [[ -z "$TARGET" ]] || die "one target at a time (got '$TARGET' and '$1')"
        TARGET="$1"
        ;;
      *)
        usage >&2
        die "unknown argument '$1'"
        ;;
    esac
    shift
  done
  if [[ -z "$TARGET" ]]; then
    usage >&2
    die "no target given: aws-ecs or google-cloud-run"
  fi

  # Rendered templates are kept for a dry run (to read what would be sent) and removed after a
  # real deploy; DEPLOY_RENDER_DIR chooses where they go.
  if [[ -n "${DEPLOY_RENDER_DIR:-}" ]]; then
    RENDER_DIR="$DEPLOY_RENDER_DIR"
    mkdir -p "$RENDER_DIR"
  else
    RENDER_DIR="$(mktemp -d "${TMPDIR:-/tmp}/deploy.XXXXXX")"
    ((DRY_RUN)) || trap 'rm -rf "$RENDER_DIR"' EXIT
  fi

  if ((DRY_RUN)); then
    note "DRY RUN: commands that change something are printed, not run"
  fi
  case "$TARGET" in
    aws-ecs) deploy_aws_ecs ;;
    google-cloud-run) deploy_google_cloud_run ;;
  esac
  if ((DRY_RUN)); then
    note "DRY RUN: rendered definitions are in $RENDER_DIR"
  fi
}

main "$@"
