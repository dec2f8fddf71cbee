{{/* Chart name, overridable with nameOverride. */}}
{{- define "vio.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: fullnameOverride, else the release name if it contains the chart name, else
"<release>-<chart>". A release named vultr-iam-operator gives "vultr-iam-operator".
*/}}
{{- define "vio.fullname" -}}
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

{{- define "vio.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "vio.labels" -}}
helm.sh/chart: {{ include "vio.chart" . }}
{{ include "vio.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: vultr-iam-operator
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels selecting the operator pods. */}}
{{- define "vio.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vio.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "vio.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "vio.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the API key. */}}
{{- define "vio.apiKeySecretName" -}}
{{- if .Values.apiKey.create }}
{{- printf "%s-api-key" (include "vio.fullname" .) }}
{{- else }}
{{- .Values.apiKey.existingSecret }}
{{- end }}
{{- end }}

{{/* "true" when leader election is on: more than one replica, or asked for. */}}
{{- define "vio.leaderElection" -}}
{{- if or (gt (int .Values.replicaCount) 1) .Values.leaderElection.enabled }}true{{ end }}
{{- end }}

{{- define "vio.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The Lease: leaderElection.leaseName, else the full name (one per release). */}}
{{- define "vio.leaseName" -}}
{{- default (include "vio.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* host:port of the metrics listener, an IPv6 host in brackets ("[::]:8080"). */}}
{{- define "vio.bindAddress" -}}
{{- $host := .Values.metrics.bindAddress }}
{{- if and (contains ":" $host) (not (hasPrefix "[" $host)) }}
{{- printf "[%s]:%d" $host (int .Values.metrics.port) }}
{{- else }}
{{- printf "%s:%d" $host (int .Values.metrics.port) }}
{{- end }}
{{- end }}

{{/* The mounted CA bundle for the Vultr API: its directory, and its file. */}}
{{- define "vio.caBundleDir" -}}/etc/vultr-iam-operator/vultr-ca{{- end }}
{{- define "vio.caBundleEnabled" -}}
{{- with .Values.vultr.caBundle }}{{ if or .configMapName .secretName }}true{{ end }}{{ end }}
{{- end }}
