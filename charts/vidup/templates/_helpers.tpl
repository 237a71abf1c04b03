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

{{- define "vidup.s3SecretName" -}}
{{- required "storage.s3.existingSecret (a Secret with the bucket's access key pair) is required when storage.type is s3" .Values.storage.s3.existingSecret -}}
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
{{- if eq .Values.storage.type "s3" }}
{{- $s3 := .Values.storage.s3 }}
- name: VIDUP_STORAGE
  value: s3
- name: VIDUP_STORAGE_DIR
  value: /var/lib/vidup
- name: VIDUP_S3_ENDPOINT
  value: {{ $s3.endpoint | quote }}
- name: VIDUP_S3_REGION
  value: {{ $s3.region | quote }}
- name: VIDUP_S3_BUCKET
  value: {{ required "storage.s3.bucket is required when storage.type is s3" $s3.bucket | quote }}
- name: VIDUP_S3_PREFIX
  value: {{ $s3.prefix | quote }}
- name: VIDUP_S3_PATH_STYLE
  value: {{ ternary "true" "false" $s3.pathStyle | quote }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ include "vidup.s3SecretName" . }}
      key: {{ $s3.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "vidup.s3SecretName" . }}
      key: {{ $s3.secretAccessKeyKey }}
{{- else }}
- name: VIDUP_STORAGE_DIR
  value: /var/lib/vidup
{{- end }}
{{- range $name, $value := .Values.config }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/* A component's volumes at VIDUP_STORAGE_DIR and /tmp: call with (dict "ctx" $ "component" "worker").
file: the shared claim. s3: nothing shared, a local scratch (an emptyDir) that only the worker
fills, with one job's encode before it goes to the bucket. */}}
{{- define "vidup.storageVolume" -}}
{{- if eq .ctx.Values.storage.type "s3" -}}
- name: scratch
  emptyDir:
    sizeLimit: {{ if eq .component "worker" }}{{ .ctx.Values.worker.scratch.sizeLimit }}{{ else }}1Gi{{ end }}
{{- else -}}
- name: storage
  persistentVolumeClaim:
    claimName: {{ include "vidup.claimName" .ctx }}
{{- end }}
- name: tmp
  emptyDir: {}
{{- end -}}

{{- define "vidup.storageMounts" -}}
- name: {{ ternary "scratch" "storage" (eq .Values.storage.type "s3") }}
  mountPath: /var/lib/vidup
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* A component's extraEnv: call with (dict "ctx" $ "component" "ingest" "env" .Values.ingest.extraEnv).
Storage is the chart's (storage.*): a second VIDUP_STORAGE, VIDUP_S3_* or (s3) AWS key pair would
set it around the chart's own value and the volumes rendered for it. */}}
{{- define "vidup.extraEnv" -}}
{{- $owned := "^(VIDUP_STORAGE|VIDUP_STORAGE_DIR|VIDUP_S3_[A-Z0-9_]+)$" -}}
{{- if eq .ctx.Values.storage.type "s3" }}
{{- $owned = "^(VIDUP_STORAGE|VIDUP_STORAGE_DIR|VIDUP_S3_[A-Z0-9_]+|AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY)$" -}}
{{- end }}
{{- range .env }}
{{- if regexMatch $owned .name }}
{{- fail (printf "%s.extraEnv must not set %s: the chart sets it from storage.* (storage.s3.existingSecret for the key pair)" $.component .name) }}
{{- end }}
{{- end }}
{{- with .env }}
{{- toYaml . }}
{{- end }}
{{- end -}}

{{/* Optional init container that hands the shared volume to the non-root uid (for volumes that
ignore fsGroup, such as NFS or hostPath). It alone runs as root, with only CHOWN/FOWNER. s3 has no
shared volume: the scratch emptyDirs are the pod's, writable through fsGroup. */}}
{{- define "vidup.volumePermissions" -}}
{{- if and .Values.volumePermissions.enabled (ne .Values.storage.type "s3") }}
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

{{/* The metrics port of a vidup container: env (VIDUP_METRICS_PORT) and the container port. */}}
{{- define "vidup.metricsEnv" -}}
{{- if .Values.metrics.enabled -}}
- name: VIDUP_METRICS_PORT
  value: {{ .Values.metrics.port | int | quote }}
{{- end }}
{{- end -}}

{{- define "vidup.metricsPort" -}}
{{- if .Values.metrics.enabled -}}
- name: metrics
  containerPort: {{ .Values.metrics.port | int }}
{{- end }}
{{- end -}}

{{/* Which scaler owns the worker Deployment's replicas: "hpa", "keda", "operator" or "" (the chart's
replicaCount). The operator's scaler excludes the other two: two scalers would fight over replicas. */}}
{{- define "vidup.workerScaler" -}}
{{- $scaling := .Values.worker.autoscaling -}}
{{- if $scaling.operator.enabled -}}
{{- if or $scaling.enabled $scaling.keda.enabled -}}
{{- fail "worker.autoscaling.operator.enabled excludes worker.autoscaling.enabled (HPA) and worker.autoscaling.keda.enabled: choose one scaler for the workers" -}}
{{- end -}}
{{- if gt (int $scaling.operator.minReplicas) (int $scaling.operator.maxReplicas) -}}
{{- fail "worker.autoscaling.operator.minReplicas must not exceed maxReplicas" -}}
{{- end -}}
operator
{{- else if and $scaling.keda.enabled (.Capabilities.APIVersions.Has "keda.sh/v1alpha1") -}}
keda
{{- else if $scaling.enabled -}}
hpa
{{- end -}}
{{- end -}}
