{{- define "somagent.labels" -}}
app.kubernetes.io/part-of: somagent
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "somagent.selector" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- define "somagent.fullname" -}}
{{ printf "%s-%s" .root.Release.Name .name | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{/* Where the other services reach service .name: its Service, on its port. */}}
{{- define "somagent.serviceUrl" -}}
{{ printf "http://%s:%v" (include "somagent.fullname" .) (index .root.Values.services .name).port }}
{{- end -}}

{{/* The built-in issuer: the configured public URL or the gateway's Service. */}}
{{- define "somagent.publicUrl" -}}
{{- with .Values.config.publicUrl -}}
{{ . | trimSuffix "/" }}
{{- else -}}
{{ include "somagent.serviceUrl" (dict "root" . "name" "gateway") }}
{{- end -}}
{{- end -}}

{{/* The Secret holding service .name's own credential. */}}
{{- define "somagent.serviceKeySecret" -}}
{{- $prefix := .root.Values.credentials.serviceKeys.secretPrefix | default (printf "%s-service-key-" .root.Release.Name) -}}
{{ printf "%s%s" $prefix .name | trunc 253 }}
{{- end -}}

{{- define "somagent.issuerKeySecret" -}}
{{ .Values.credentials.issuerKey.secretName | default (printf "%s-service-issuer-key" .Release.Name) }}
{{- end -}}

{{- define "somagent.masterKeySecret" -}}
{{ .Values.masterKey.secretName | default (printf "%s-master-key" .Release.Name) }}
{{- end -}}
