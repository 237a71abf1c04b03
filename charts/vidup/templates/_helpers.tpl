{{/* The chart's name, overridable. */}}
{{- define "vidup.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's base name: the release name when it already contains the chart's name. */}}
{{- define "vidup.fullname" -}}
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

{{- define "vidup.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of one component: call with (dict "ctx" $ "component" "ingest"). */}}
{{- define "vidup.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vidup.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Every object's labels: the standard six plus commonLabels. */}}
{{- define "vidup.labels" -}}
helm.sh/chart: {{ include "vidup.chart" .ctx }}
{{ include "vidup.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: vidup
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "vidup.componentName" -}}
{{- printf "%s-%s" (include "vidup.fullname" .ctx) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* An image reference: call with (dict "ctx" $ "image" .Values.ingest.image). */}}
{{- define "vidup.image" -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{- define "vidup.authSecretName" -}}
{{- default (printf "%s-auth" (include "vidup.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{- define "vidup.claimName" -}}
{{- default (printf "%s-storage" (include "vidup.fullname" .)) .Values.storage.existingClaim -}}
{{- end -}}

{{- define "vidup.redisSecretName" -}}
{{- default (printf "%s-redis-url" (include "vidup.fullname" .)) .Values.externalRedis.existingSecret -}}
{{- end -}}

{{- define "vidup.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end -}}

{{- define "vidup.securityContext" -}}
{{- toYaml .Values.securityContext }}
{{- end -}}

{{/* The settings every vidup component reads (see README "Configuration"). */}}
{{- define "vidup.env" -}}
- name: VIDUP_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: VIDUP_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "vidup.redisSecretName" . }}
      key: {{ .Values.externalRedis.existingSecretKey }}
- name: VIDUP_STORAGE_DIR
  value: /var/lib/vidup
{{- range $name, $value := .Values.config }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{- define "vidup.storageVolume" -}}
- name: storage
  persistentVolumeClaim:
    claimName: {{ include "vidup.claimName" . }}
- name: tmp
  emptyDir: {}
{{- end -}}

{{- define "vidup.storageMounts" -}}
- name: storage
  mountPath: /var/lib/vidup
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* Optional init container that hands the shared volume to the non-root uid (for volumes that
ignore fsGroup, such as NFS or hostPath). It alone runs as root, with only CHOWN/FOWNER. */}}
{{- define "vidup.volumePermissions" -}}
{{- if .Values.volumePermissions.enabled }}
- name: volume-permissions
  image: {{ include "vidup.image" (dict "ctx" . "image" .Values.worker.image) }}
  imagePullPolicy: {{ .Values.worker.image.pullPolicy }}
  command: ["sh", "-c", "chown {{ .Values.podSecurityContext.runAsUser }}:{{ .Values.podSecurityContext.fsGroup }} /var/lib/vidup && chmod 2775 /var/lib/vidup"]
  securityContext:
    runAsNonRoot: false
    runAsUser: 0
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    capabilities:
      drop: [ALL]
      add: [CHOWN, FOWNER]
  volumeMounts:
    - name: storage
      mountPath: /var/lib/vidup
  resources: {{- toYaml .Values.volumePermissions.resources | nindent 4 }}
{{- end }}
{{- end -}}

{{- define "vidup.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity: {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
