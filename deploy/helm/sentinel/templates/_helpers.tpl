{{/* Chart name, truncated to the 63 characters Kubernetes allows in a label. */}}
{{- define "sentinel.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name, plus the chart name unless it already contains it. */}}
{{- define "sentinel.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "sentinel.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sentinel.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sentinel.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sentinel.labels" -}}
helm.sh/chart: {{ include "sentinel.chart" . }}
{{ include "sentinel.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: daemon
{{- end }}

{{- define "sentinel.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sentinel.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sentinel.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The Secret holding the tokens: the release's own, or the operator's existingSecret. */}}
{{- define "sentinel.secretName" -}}
{{- default (include "sentinel.fullname" .) .Values.existingSecret }}
{{- end }}

{{- define "sentinel.rulesConfigMap" -}}
{{- default (printf "%s-rules" (include "sentinel.fullname" .)) .Values.rules.existingConfigMap }}
{{- end }}

{{/* True when a rules ConfigMap is mounted (the release's or an existing one). */}}
{{- define "sentinel.hasRules" -}}
{{- if or .Values.rules.files .Values.rules.existingConfigMap }}true{{ end }}
{{- end }}

{{/*
ConfigMap keys may not contain "/": "detectors/spend_spike.yaml" is stored under
"detectors__spend_spike.yaml" and mounted back at its path (volume items).
*/}}
{{- define "sentinel.rulesKey" -}}
{{- . | replace "/" "__" }}
{{- end }}

{{/*
Secret values -> environment variables. Each entry: values key, Secret key, variable.
The variables are the settings of sentinel/config.py (all SecretStr there).
*/}}
{{- define "sentinel.secretEnv" -}}
- [redisUrl, redis-url, SENTINEL_STATE__REDIS_URL]
- [hecToken, hec-token, SENTINEL_SINKS__HEC_TOKEN]
- [slackBotToken, slack-bot-token, SENTINEL_SINKS__SLACK_BOT_TOKEN]
- [slackSigningSecret, slack-signing-secret, SENTINEL_SINKS__SLACK_SIGNING_SECRET]
- [revokeHmacSecret, revoke-hmac-secret, SENTINEL_SINKS__REVOKE_HMAC_SECRET]
- [pagerdutyRoutingKey, pagerduty-routing-key, SENTINEL_SINKS__PAGERDUTY_ROUTING_KEY]
- [opsgenieApiKey, opsgenie-api-key, SENTINEL_SINKS__OPSGENIE_API_KEY]
- [alertmanagerBearerToken, alertmanager-bearer-token, SENTINEL_SINKS__ALERTMANAGER_BEARER_TOKEN]
- [kafkaSaslPassword, kafka-sasl-password, SENTINEL_KAFKA__SASL_PASSWORD]
{{- end }}

{{/* Fail early on settings that cannot work. */}}
{{- define "sentinel.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.existingSecret) (not .Values.secrets.redisUrl) }}
{{- fail "replicaCount > 1 needs Redis for checkpoints and cross-replica dedup: set secrets.redisUrl or existingSecret" }}
{{- end }}
{{- if not .Values.kafka.groupId }}
{{- fail "kafka.groupId must be set: the replicas form one consumer group" }}
{{- end }}
{{- range $path, $_ := .Values.rules.files }}
{{- if not (regexMatch "^([A-Za-z0-9_.-]+/)?[A-Za-z0-9_.-]+\\.ya?ml$" $path) }}
{{- fail (printf "rules.files: %q is not a rules file path (NAME.yaml or detectors/NAME.yaml)" $path) }}
{{- end }}
{{- end }}
{{- end }}
