{{/* The release's base name for every object: <release>-miniautoml, or the release name when it
already contains the chart's name; at most 63 characters. */}}
{{- define "miniautoml.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "miniautoml.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object the chart creates. */}}
{{- define "miniautoml.labels" -}}
app.kubernetes.io/name: {{ include "miniautoml.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: miniautoml
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Selector labels of the operator's pods. */}}
{{- define "miniautoml.selectorLabels" -}}
app.kubernetes.io/name: {{ include "miniautoml.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "miniautoml.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "miniautoml.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* An image reference: (global.imageRegistry or registry)/repository, then @digest when set,
else :tag (default: the chart's appVersion). Call with (dict "image" .Values.x.image "root" $). */}}
{{- define "miniautoml.image" -}}
{{- $registry := default .image.registry .root.Values.global.imageRegistry -}}
{{- $name := .image.repository -}}
{{- if $registry -}}{{- $name = printf "%s/%s" $registry .image.repository -}}{{- end -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $name .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $name (default .root.Chart.AppVersion .image.tag | toString) -}}
{{- end -}}
{{- end -}}

{{/* Names of the pull secrets of every pod the chart runs (and of the trainers and predictors
the operator starts), as a JSON list. */}}
{{- define "miniautoml.pullSecretNames" -}}
{{- concat .Values.global.imagePullSecrets .Values.imagePullSecrets | uniq | toJson -}}
{{- end -}}

{{/* The bundled object store's name and labels. */}}
{{- define "miniautoml.objectStore.fullname" -}}
{{- printf "%s-object-store" (include "miniautoml.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "miniautoml.objectStore.selectorLabels" -}}
app.kubernetes.io/name: {{ include "miniautoml.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: object-store
{{- end -}}

{{/* The S3 endpoint the operator, trainers and predictors use. */}}
{{- define "miniautoml.storage.endpoint" -}}
{{- if .Values.objectStore.enabled -}}
{{- printf "http://%s.%s.svc:%v" (include "miniautoml.objectStore.fullname" .) .Release.Namespace .Values.objectStore.port -}}
{{- else -}}
{{- .Values.storage.endpoint -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or nothing. */}}
{{- define "miniautoml.storage.secret" -}}
{{- if .Values.objectStore.enabled -}}
{{- printf "%s-credentials" (include "miniautoml.objectStore.fullname" .) -}}
{{- else -}}
{{- .Values.storage.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the run-token key (key `key`). */}}
{{- define "miniautoml.runTokenSecret" -}}
{{- .Values.runTokens.existingSecret | default (printf "%s-run-token-key" (include "miniautoml.fullname" .)) -}}
{{- end -}}

{{/* The namespace of the resources the gRPC API creates and serves. */}}
{{- define "miniautoml.grpcNamespace" -}}
{{- default .Release.Namespace .Values.grpc.namespace -}}
{{- end -}}

{{/* The TLS Secret the operator serves with: tls.secretName, else the one the chart generates;
empty when TLS is off. */}}
{{- define "miniautoml.tls.secret" -}}
{{- if .Values.tls.enabled -}}
{{- .Values.tls.secretName | default (printf "%s-tls" (include "miniautoml.fullname" .)) -}}
{{- else if or .Values.tls.secretName .Values.tls.certManager.issuerRef -}}
{{- fail "tls.secretName and tls.certManager need tls.enabled=true" -}}
{{- end -}}
{{- end -}}

{{/* The scheme of the operator's metrics/health port: HTTPS when TLS is on. */}}
{{- define "miniautoml.adminScheme" -}}
{{- if .Values.tls.enabled }}HTTPS{{ else }}HTTP{{ end }}
{{- end }}
